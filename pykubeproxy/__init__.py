"""pykubeproxy: a drop-in kube-proxy written in Python."""

__version__ = "0.1.0"
