"""Opening a stage's study: create it, or resume it when it holds a search of the same settings.

The one open/create/check both stages of `nas search` use (the latency stage's `<study>`, the proxy stage's
`<study>:proxy`):

- `open_study`: load the study, or create it holding its `StudyMeta` and naming its objectives (Optuna's
  metric names, which optuna-dashboard shows); a stored one is checked against this run's settings
  (`check_resume`). Storage errors are one line naming the storage.
- `settle_name`: the name a search uses: a default name whose study holds a search of other settings gives
  these settings a study of their own, `<name>-<digest>` (the same every time, so running them again resumes
  it), instead of an error.
"""

from __future__ import annotations

import warnings
from typing import Callable

from nas.core.errors import NasUserError
from nas.study.schema import STUDY_META, StudyMeta
from nas.study.storage import STORAGE_ERRORS, first_line

SEARCH, PROXY = "search", "proxy"  # what a study holds: the latency stage's trials, or the proxy stage's


def load_or_none(storage, url: str, name: str):
    """The study `name`, or None when the storage holds none of that name."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    except STORAGE_ERRORS as exc:  # a corrupt or foreign database, a lost connection
        raise NasUserError(f"cannot read study storage {url!r}: {first_line(exc)}") from None


def open_study(storage, url: str, name: str, meta: StudyMeta, kind: str = SEARCH, create: bool = True):
    """The study `name` (see the module docstring); None when it is missing and `create` is false."""
    study = load_or_none(storage, url, name)
    if study is not None:
        check_resume(study, meta, url, kind)
        return study
    return _create(storage, url, name, meta, kind) if create else None


def _create(storage, url: str, name: str, meta: StudyMeta, kind: str):
    import optuna

    try:
        study = optuna.create_study(study_name=name, storage=storage,
                                    directions=[o.direction for o in meta.objectives])
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it a moment ago
        study = optuna.load_study(study_name=name, storage=storage)
        check_resume(study, meta, url, kind)
        return study
    except STORAGE_ERRORS as exc:  # a read-only file, a lost connection
        raise NasUserError(f"cannot create study {name!r} in {url!r}: {first_line(exc)}") from None
    _write_meta(study, meta)
    with warnings.catch_warnings():  # experimental in Optuna; it names the objectives in optuna-dashboard
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.label for o in meta.objectives])
    return study


def _write_meta(study, meta: StudyMeta) -> None:
    for key, value in meta.to_user_attrs().items():
        study.set_user_attr(key, value)


def check_resume(study, meta: StudyMeta, url: str, kind: str = SEARCH) -> None:
    """Refuse to resume a study searched with other settings, or (the latency stage's) one searched under
    another latency model or written by another tool; one line each. A latency-stage study written before
    nas recorded latency-model fingerprints records them from now on."""
    name = study.study_name
    old = StudyMeta.from_user_attrs(study.user_attrs)
    if kind == PROXY:
        if old is not None and old.identity() != meta.identity():
            diffs = "; ".join(meta.differences(old)[:3])  # the setting by name and value, as the latency stage says
            raise NasUserError(f"proxy study {name!r} was trained with other settings ({diffs}); pass --study "
                               "NEW_NAME, or the same settings to resume it")
        return
    if old is None:
        if study.get_trials(deepcopy=False):
            raise NasUserError(f"study {name!r} in {url} was not created by nas search; pass another --study name")
        _write_meta(study, meta)
        return
    diffs = meta.differences(old)
    if diffs:
        raise NasUserError(f"study {name!r} in {url} was searched with other settings ({'; '.join(diffs)}); pass "
                           "--study NEW_NAME for a new study, or the same settings to resume it")
    changed = meta.latency_model_change(old, name)
    if changed:
        raise NasUserError(changed)
    if old.latency_models is None:
        study.set_user_attr(STUDY_META, meta.to_user_attrs()[STUDY_META])


def settle_name(storage, url: str, name: str, named_by_user: bool, meta: StudyMeta,
                log: Callable[[str], None]) -> str:
    """The latency stage's study name (see the module docstring); a study already under the final name is
    checked (`check_resume`)."""
    study = load_or_none(storage, url, name)
    if study is None:
        return name
    old = StudyMeta.from_user_attrs(study.user_attrs)
    if old is None:
        return name  # checked when it is opened: empty, it is taken over; with trials, refused
    if meta.differences(old) and not named_by_user:
        renamed = f"{name}-{meta.digest()}"
        log(f"note: study {name!r} holds a search with other settings ({'; '.join(meta.differences(old)[:3])}); "
            f"this one is study {renamed!r}")
        return settle_name(storage, url, renamed, True, meta, log)  # one rename at most
    check_resume(study, meta, url)
    return name
