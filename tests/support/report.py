"""What the fault-injection tests count, printed at the end of every run (tests/conftest.py)."""

REPORT: dict = {"faults_injected": 0, "jobs_checked": 0, "jobs_lost": 0, "jobs_trained_twice": 0}
