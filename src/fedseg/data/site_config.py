"""A site's own description of its data (``<data>/fedseg_site.yaml``): what it never
acquires. Not a plan key: a deployment's plan does not know a site's folders.

```yaml
absent_modalities: [flair]   # acquired for none of this site's cases
```
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from fedseg.config_files import first_error, read_yaml_mapping
from fedseg.data.cases import MODALITIES
from fedseg.errors import FedsegError

SITE_CONFIG_FILE = "fedseg_site.yaml"


class SiteDataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    absent_modalities: list[str] = []

    @field_validator("absent_modalities")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in MODALITIES]
        if bad:
            raise ValueError(f"unknown modality {bad[0]!r}; use {', '.join(MODALITIES)}")
        if len(set(v)) >= len(MODALITIES):
            raise ValueError("a site cannot lack every modality")
        return sorted(set(v), key=MODALITIES.index)

    @property
    def present(self) -> list[str]:
        return [m for m in MODALITIES if m not in self.absent_modalities]


def read_site_config(root: Path) -> SiteDataConfig:
    """``root/fedseg_site.yaml`` checked; the default (nothing absent) when there is none."""
    path = Path(root) / SITE_CONFIG_FILE
    if not path.is_file():
        return SiteDataConfig()
    raw = read_yaml_mapping(path, "site data config", "see the README's Synthesis section")
    try:
        return SiteDataConfig.model_validate(raw)
    except ValidationError as exc:
        raise FedsegError(f"{path}: {first_error(exc, 'site data config')}") from None
