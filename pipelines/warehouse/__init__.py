"""The warehouse: the one reader and writer of DuckDB or PostgreSQL (by `dbt_target`), the DDL of what
Python writes, and the dbt runner that builds the marts every later stage reads.
"""
