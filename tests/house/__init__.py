"""The package's shape: module and function sizes, and which layer may import which."""
