"""svcdoctor: the node-side half of Kubernetes' "Debug Services" guide, run continuously."""

__version__ = "0.1.0"
