"""Real-packet data-plane tests: traffic between network namespaces through the proxy's rules."""
