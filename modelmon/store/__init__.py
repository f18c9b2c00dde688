"""The time-series store: tables, engines, migrations and shared queries."""
