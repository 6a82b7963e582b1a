"""The local target: jobs run as child processes on this host, SQL on DuckDB catalogs."""
