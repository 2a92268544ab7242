"""hasched: a job scheduler that a Pacemaker/Corosync cluster keeps running."""

__version__ = "0.1.0"
