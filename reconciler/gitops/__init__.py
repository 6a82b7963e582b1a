"""The GitOps workflow over the jobs repo: versions of a job, drafts, rollback, origin drift.

Each module keeps its pure part (values in, values out: `parse_`, `pick_`, `plan_`,
`diff_`, `render_`) apart from its thin edge (`load_`, `fetch_`, `write_`), which reads
git through `reconciler.repo`. Nothing here touches the state store.
"""
