"""``python -m soundcl.report`` (a published command): runs :func:`soundcl.results.report.main`."""
from soundcl.results.report import main

if __name__ == "__main__":
    main()
