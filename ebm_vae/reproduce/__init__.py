"""The paper's tables from YAML: their spec, the planned runs, and the reports."""
