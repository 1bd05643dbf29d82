"""`python -m workbench tune`: every method tuned with the same trial budget (Optuna studies whose
trials are sweep points run by `workbench.lab.sweep`), judged on fresh seeds; `spec` checks a
tuning spec whole before any trial runs."""
