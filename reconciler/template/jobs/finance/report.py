"""Monthly finance report: arguments arrive as argv (--month current)."""

import argparse
import datetime

parser = argparse.ArgumentParser()
parser.add_argument("--month", default="current")
args = parser.parse_args()
today = datetime.date.today()
print(f"finance report for {args.month} (generated {today.isoformat()})")
