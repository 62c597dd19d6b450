"""`make report` and `make docs`: what changed since a revision, and the docs site's generated pages."""
