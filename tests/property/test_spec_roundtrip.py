"""load(dump(spec)) == spec: a job written back as YAML reads as the same job."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.spec.job import JobSpec

names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
crons = st.sampled_from(["0 2 * * *", "*/15 * * * *", "@daily", "30 1 1,15 * mon-fri"])
zones = st.sampled_from(["UTC", "Europe/Berlin", "Australia/Lord_Howe", "Pacific/Chatham"])
schedule = st.fixed_dictionaries(
    {"id": st.from_regex(r"[a-z][a-z0-9-]{0,5}[a-z0-9]", fullmatch=True), "cron": crons},
    optional={
        "timezone": zones,
        "startingDeadlineSeconds": st.integers(1, 10_000),
        "concurrencyPolicy": st.sampled_from(["ALLOW", "FORBID", "REPLACE"]),
        "enabled": st.booleans(),
    },
)
command = st.one_of(
    st.fixed_dictionaries(
        {"cmd": text.filter(str.strip)}, optional={"env": st.dictionaries(names, text, max_size=3)}
    ),
    st.fixed_dictionaries({"args": st.lists(text, min_size=1, max_size=4)}),
)
kind = st.one_of(
    st.fixed_dictionaries({"command": command}),
    st.fixed_dictionaries(
        {
            "sql": st.one_of(
                st.fixed_dictionaries({"query": names}),
                st.fixed_dictionaries({"file": st.just("a.sql")}),
            )
        }
    ),
    st.fixed_dictionaries({"python": st.fixed_dictionaries({"file": st.just("job.py")})}),
)
jobs = st.builds(
    lambda k, extra: {**k, **extra},
    kind,
    st.fixed_dictionaries(
        {},
        optional={
            "description": text,
            "team": names,
            "arguments": st.dictionaries(names, text, max_size=3),
            "labels": st.dictionaries(names, text, max_size=3),
            "timeoutSeconds": st.integers(1, 86_400),
            "maxConcurrentRuns": st.integers(1, 10),
            "bookmark": st.sampled_from(["enable", "disable", "pause"]),
            "restart": st.fixed_dictionaries(
                {"policy": st.sampled_from(["NEVER", "ON_FAILURE"])},
                optional={"maxAttempts": st.integers(1, 5)},
            ),
            "schedules": st.lists(schedule, max_size=3, unique_by=lambda s: s["id"]),
            "secrets": st.dictionaries(
                names,
                st.one_of(
                    st.fixed_dictionaries({"fromEnv": names}),
                    st.fixed_dictionaries({"fromFile": st.just("/run/secrets/x")}),
                ),
                max_size=2,
            ),
        },
    ),
)


@settings(max_examples=150, deadline=None)
@given(jobs)
def test_a_job_dumped_as_yaml_loads_as_the_same_job(document: dict[str, Any]) -> None:
    spec = JobSpec.model_validate(document)
    dumped = yaml.safe_dump(spec.to_document(), allow_unicode=True, sort_keys=False)
    again = JobSpec.model_validate(yaml.load(dumped, Loader=yaml.CSafeLoader))
    assert again == spec
