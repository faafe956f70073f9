"""What the tests share: fakes of the kernel edges, builders of API objects, waits, namespaces."""
