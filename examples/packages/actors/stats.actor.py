import pandas as pd
from reflow import actor


@actor(name="Stats", inports=["values"], outports=["summary"], tags=["example"])
def stats(context):
    """Summarizes a list of numbers with pandas (installed from reflow.yaml's
    `workspace.sandbox.python.packages`, not from the base image)."""
    s = pd.Series(context.get_input("values"), dtype="float64")
    return {
        "summary": {
            "count": int(s.count()),
            "mean": float(s.mean()),
            "median": float(s.median()),
            "max": float(s.max()),
        }
    }
