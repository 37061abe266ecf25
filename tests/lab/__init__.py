"""The namespace lab: client <-> gateway <-> server network namespaces (netns.py), the
vulnerable metrics-ui app (server_app.py), traffic probes (traffic.py, probe.py,
crafted.py) and the demo (`python -m tests.lab.demo`)."""
