# Convenience wrappers around tasks.py (which needs only Python 3.11+).
.PHONY: setup demo demo-ci test lint bench stack
setup: ; python3 tasks.py setup
demo: ; python3 tasks.py demo
demo-ci: ; python3 tasks.py demo --no-ui
test: ; python3 tasks.py test
lint: ; python3 tasks.py lint
bench: ; python3 tasks.py bench
stack: ; python3 tasks.py stack
