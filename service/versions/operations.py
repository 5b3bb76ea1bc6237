"""deploy, promote, rollback, retire and the versions list, over TorchServe's management API.

A candidate is registered beside the serving default (warm: its minimum workers READY and one answer
given) without touching the default; only `promote` (or deploy's --promote after the gate) switches,
with PUT /models/{model}/{version}/set-default, which TorchServe applies between two requests: requests
in flight finish on the version that took them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.client.api import TorchServeClient, ready_workers
from service.photos import warm_up_jpeg
from service.versions.gate import GateResult, evaluate, held_out_split, labelled_folder, table
from service.versions.record import VersionRecord, now
from service.versions.store import Archive, VersionError, find_archive, into_store, report_files, retire_archive


@dataclass(frozen=True)
class Served:
    """One registered version as the management API describes it."""

    version: str
    default: bool
    ready: int
    wanted: int
    archive: str


def served_versions(client: TorchServeClient, model: str) -> list[Served]:
    """Every registered version of `model` (empty if none), the default marked."""
    every = client.describe_versions(model)
    if every.status_code == 404:
        return []
    _check(every, f"describing {model}")
    default = client.describe_model(model)
    _check(default, f"describing {model}")
    default_version = str(default.json()[0]["modelVersion"])
    return [
        Served(
            str(v["modelVersion"]), str(v["modelVersion"]) == default_version, *ready_workers(v), v.get("modelUrl", "")
        )
        for v in every.json()
    ]


def default_version(client: TorchServeClient, model: str) -> str | None:
    return next((s.version for s in served_versions(client, model) if s.default), None)


def _check(response, what: str) -> None:
    if not response.ok:
        raise VersionError(f"{what}: TorchServe answered {response.status_code} {response.text.strip()[:300]}")


def class_set(candidate: Archive, default: Archive | None, new_classes: bool) -> list[str]:
    """The classes the gate compares on; differing labels are refused unless `new_classes`."""
    if default is None:
        return list(candidate.labels)
    only_new = sorted(set(candidate.labels) - set(default.labels))
    only_old = sorted(set(default.labels) - set(candidate.labels))
    if (only_new or only_old) and not new_classes:
        raise VersionError(
            f"{candidate.model} version {candidate.version} has other classes than the default version "
            f"{default.version}: only in the candidate: {', '.join(only_new) or 'none'}; only in the default: "
            f"{', '.join(only_old) or 'none'}. Pass --new-classes if that is intended (the gate then compares "
            "on the classes both know)"
        )
    common = [c for c in candidate.labels if c in set(default.labels)]
    if not common:
        raise VersionError("the candidate and the default share no class: nothing to compare")
    return common


def gate_examples(candidate: Archive, eval_dir: Path | None) -> list[tuple[Path, str]]:
    """--eval DIR, else the held-out split the candidate's fine-tuning report recorded."""
    if eval_dir is not None:
        return labelled_folder(eval_dir)
    reports = [p for p in report_files(candidate.path) if p.name.endswith(".report.json")]
    if not reports:
        raise VersionError(
            f"no fine-tuning report beside {candidate.path}: give the gate a labelled folder with --eval DIR"
        )
    return held_out_split(reports[0])


def register_warm(client: TorchServeClient, archive: Archive, store_name: str) -> None:
    """Register by bare store name with the archive's minimum workers, wait for them, answer once."""
    _check(client.register(store_name, archive.min_workers), f"registering {store_name}")
    described = client.describe_model(archive.model, version=archive.version)
    _check(described, f"describing {archive.model} {archive.version}")
    ready, wanted = ready_workers(described.json()[0])
    if ready < wanted:
        raise VersionError(f"{archive.model} version {archive.version}: {ready} of {wanted} workers READY")
    answer = client.predict(archive.model, warm_up_jpeg(), filename="warm-up.jpg", version=archive.version)
    _check(answer, f"warming up {archive.model} version {archive.version}")


@dataclass
class Deployed:
    model: str
    version: str
    gate: GateResult | None
    promoted: bool


def deploy(
    client: TorchServeClient,
    run_dir: Path,
    store: Path,
    archive_path: Path,
    eval_dir: Path | None = None,
    promote: bool = False,
    tolerance: float = 0.0,
    new_classes: bool = False,
    say: Callable[[str], None] = print,
) -> Deployed:
    """Copy into the store, register beside the default, gate, and promote if asked and the gate holds."""
    candidate = Archive.read(archive_path)
    served = served_versions(client, candidate.model)
    if any(s.version == candidate.version for s in served):
        raise VersionError(
            f"{candidate.model} version {candidate.version} is already registered "
            "(build the new one with another --version)"
        )
    current = next((s.version for s in served if s.default), None)
    default = find_archive(store, candidate.model, current) if current else None
    if current and default is None:
        raise VersionError(f"the default {candidate.model} version {current} has no archive in {store}")
    classes = class_set(candidate, default, new_classes)
    examples = gate_examples(candidate, eval_dir) if current else []
    target = into_store(candidate, store)
    say(
        f"registering {target.name} ({candidate.model} version {candidate.version}) beside the default "
        f"{current or '(none)'}"
    )
    register_warm(client, candidate, target.name)
    record = VersionRecord(run_dir)
    record.update(
        candidate.model,
        candidate.version,
        archive=target.name,
        registered=now(),
        report_accuracy=candidate.report_accuracy,
    )
    if current is None:
        record.made_default(candidate.model, candidate.version)
        say(f"{candidate.model} had no version served: version {candidate.version} is its default")
        return Deployed(candidate.model, candidate.version, None, True)
    record.made_default(candidate.model, current)  # a default from the server's start is recorded too
    result = evaluate(client, candidate.model, current, candidate.version, examples, classes, tolerance)
    record.update(candidate.model, candidate.version, gate=result.summary())
    say(table(result))
    if promote and result.passed:
        promote_version(client, run_dir, candidate.model, candidate.version)
        say(
            f"promoted: {candidate.model} version {candidate.version} is the default "
            f"(manage.py rollback {candidate.model} goes back to {current})"
        )
    elif promote:
        say(
            f"not promoted: {result.reason}; version {current} stays the default "
            f"(manage.py retire {candidate.model} {candidate.version} unloads the candidate)"
        )
    return Deployed(candidate.model, candidate.version, result, promote and result.passed)


def promote_version(client: TorchServeClient, run_dir: Path, model: str, version: str) -> None:
    served = served_versions(client, model)
    if not any(s.version == version for s in served):
        raise VersionError(
            f"{model} version {version} is not registered "
            f"(registered: {', '.join(s.version for s in served) or 'none'})"
        )
    record = VersionRecord(run_dir)
    current = next((s.version for s in served if s.default), None)
    if current:
        record.made_default(model, current)
    _check(client.set_default(model, version), f"making {model} version {version} the default")
    record.made_default(model, version)
    record.update(model, version, promoted=now())


def rollback(client: TorchServeClient, run_dir: Path, model: str) -> str:
    """Back to the previous default that is still loaded; returns it."""
    served = served_versions(client, model)
    current = next((s.version for s in served if s.default), None)
    if current is None:
        raise VersionError(f"{model} is not served")
    record = VersionRecord(run_dir)
    previous = record.previous_default(model, current, {s.version for s in served})
    if previous is None:
        raise VersionError(f"no earlier default of {model} is still loaded (current: {current})")
    _check(client.set_default(model, previous), f"making {model} version {previous} the default")
    defaults = record.model(model)["defaults"]
    while defaults and defaults[-1] == current:
        defaults.pop()
    record.made_default(model, previous)
    record.update(model, current, rolled_back=now())
    return previous


def retire(client: TorchServeClient, run_dir: Path, store: Path, model: str, version: str) -> Path | None:
    """Unregister a version that is not the default; its archive moves to the store's .retired/ folder."""
    served = served_versions(client, model)
    match = next((s for s in served if s.version == version), None)
    if match is None:
        raise VersionError(f"{model} version {version} is not registered")
    if match.default:
        raise VersionError(f"{model} version {version} is the default: promote or roll back to another first")
    _check(client.unregister(model, version), f"unregistering {model} version {version}")
    VersionRecord(run_dir).forget(model, version)
    archive = find_archive(store, model, version)
    return retire_archive(archive.path) if archive else None


def version_rows(client: TorchServeClient, run_dir: Path, model: str, store: Path | None = None) -> list[dict]:
    """One row per registered version: default marker, workers, when registered, report and gate accuracy
    (the report's from the version record, else from the archive in `store`)."""
    record = VersionRecord(run_dir).model(model)["versions"]
    rows = []
    for s in served_versions(client, model):
        facts = dict(record.get(s.version, {}))
        if facts.get("report_accuracy") is None and store is not None:
            archive = find_archive(store, model, s.version)
            facts["report_accuracy"] = archive.report_accuracy if archive else None
        gate = (facts.get("gate") or {}).get("candidate") or {}
        rows.append(
            {
                "version": s.version,
                "default": s.default,
                "workers": f"{s.ready}/{s.wanted}",
                "archive": s.archive,
                "registered": facts.get("registered", "at server start"),
                "report_accuracy": facts.get("report_accuracy"),
                "gate_accuracy": gate.get("accuracy"),
                "gate": facts.get("gate"),
            }
        )
    return rows


def restore_defaults(client: TorchServeClient, run_dir: Path, say: Callable[[str], None] = print) -> None:
    """After a restart TorchServe makes whichever version it loaded first the default: put back the recorded one."""
    record = VersionRecord(run_dir)
    for model, entry in record.data.items():
        if not entry.get("defaults"):
            continue
        wanted = entry["defaults"][-1]
        served = served_versions(client, model)
        if any(s.version == wanted and not s.default for s in served):
            _check(client.set_default(model, wanted), f"restoring {model} version {wanted} as the default")
            say(f"{model}: version {wanted} is the default again (as recorded in {record.path})")
