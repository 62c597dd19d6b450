"""The science, pure: functions and scikit-learn objects on DataFrames; no MLflow, DVC, git or subprocess."""
