"""Teams and ownership: who may change which files of the jobs repo, who may operate
which job's runs, and the CODEOWNERS approximation the forge enforces.

`rules` and `codeowners` are pure; `check` reads git and the store.
"""
