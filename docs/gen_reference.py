"""mkdocs-gen-files script: writes the reference pages from the code at build time (see drift_framework.docgen)."""
import mkdocs_gen_files

from drift_framework import docgen

for path, text in docgen.pages().items():
    with mkdocs_gen_files.open(path, "w") as f:
        f.write(text)
