"""TorchServe's config.properties: read its keys, and render a copy with some of them replaced."""

from __future__ import annotations

from pathlib import Path


def read_properties(path: Path) -> dict[str, str]:
    """key -> value of a Java properties file as TorchServe writes them (key=value, # comments)."""
    props = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def render_config(base: Path, overrides: dict[str, str], dest: Path) -> None:
    """Copy config.properties with some keys replaced, keeping its comments and order."""
    lines, seen = [], set()
    for line in Path(base).read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in overrides:
            line = f"{key}={overrides[key]}"
            seen.add(key)
        lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    dest.write_text("\n".join(lines) + "\n")
