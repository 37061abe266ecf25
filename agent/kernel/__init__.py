"""Kernel adapters: the only place that shells out to nft/iptables or opens netlink sockets.

See docs/kernel.md for the ruleset design and what runs where.
"""
