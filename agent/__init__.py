"""rustyflag-agent: threat intel in, nftables sets and an NFQUEUE HTTP inspector out."""

__version__ = "0.1.0"
