"""Uploaded networks: a torch.export archive read without pickles, lifted back into trainable
layers, described as layer groups for a space, pruned with torch-pruning's dependency graph."""

from workers.networks.archive import ArchiveError, load_program, safe_archive
from workers.networks.describe import describe
from workers.networks.lift import Lifted, check_lifted, lift
from workers.networks.ops import NetworkError, UnsupportedOpError
from workers.networks.parent import (
    UploadedNet,
    lifted_network,
    network_file,
    sha256,
    uploaded_parent,
)

__all__ = [
    "ArchiveError",
    "Lifted",
    "NetworkError",
    "UnsupportedOpError",
    "UploadedNet",
    "check_lifted",
    "describe",
    "lift",
    "lifted_network",
    "load_program",
    "network_file",
    "safe_archive",
    "sha256",
    "uploaded_parent",
]
