"""What one `ml.*` instance is, in cluster resources: vCPUs, memory and accelerators.

A cluster executor (``executors/ray.py``) sizes one placement-group bundle per job instance from this. The
table covers every ``ml.*`` instance type of botocore's SageMaker model (a unit test walks the enums) by
AWS's naming rules (the size gives the vCPUs, the family the memory per vCPU) plus explicit rows for the
accelerated families, whose accelerator counts do not follow the size. Figures are the EC2 instance specs
(memory rounded to GiB); an operator overrides any row, or adds one, with a JSON file::

    {"ml.m5.large": {"cpus": 1, "memory_gib": 2}, "ml.g5.xlarge": {"cpus": 4, "memory_gib": 16, "gpus": 1}}

named by ``OPENSAGE_INSTANCE_TYPES`` (or ``<home>/instance-types.json``), e.g. to run "ml.p3.2xlarge" jobs on a
node with a smaller GPU, or to fit more instances on a small test cluster.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

GIB = 1024**3


@dataclass(frozen=True)
class InstanceResources:
    cpus: float
    memory_gib: float
    gpus: int = 0
    neuron_cores: int = 0  # Inferentia / Trainium (Ray's built-in ``neuron_cores`` resource)
    hpus: int = 0  # Gaudi (ml.dl1), Ray's ``HPU`` resource

    def bundle(self) -> dict[str, float]:
        """A Ray resource bundle (memory in bytes, as Ray counts it)."""
        out: dict[str, float] = {"CPU": self.cpus, "memory": int(self.memory_gib * GIB)}
        if self.gpus:
            out["GPU"] = self.gpus
        if self.neuron_cores:
            out["neuron_cores"] = self.neuron_cores
        if self.hpus:
            out["HPU"] = self.hpus
        return out

    def describe(self) -> str:
        parts = [f"{self.cpus:g} vCPU", f"{self.memory_gib:g} GiB"]
        if self.gpus:
            parts.append(f"{self.gpus} GPU")
        if self.neuron_cores:
            parts.append(f"{self.neuron_cores} NeuronCore")
        if self.hpus:
            parts.append(f"{self.hpus} HPU")
        return ", ".join(parts)


_SIZE_VCPUS = {"micro": 1, "small": 1, "medium": 1, "large": 2, "xlarge": 4}
# GiB per vCPU by family; the first letters of the family decide unless the family has its own entry.
_FAMILY_GIB_PER_VCPU = {"c4": 1.875, "c5n": 2.625, "i3en": 8.0}
_CLASS_GIB_PER_VCPU = {"c": 2.0, "m": 4.0, "r": 8.0, "t": 4.0, "i": 8.0, "x": 16.0, "z": 8.0}
# Burstable types: (vCPUs, GiB) do not follow the rule.
_BURSTABLE = {"micro": (2, 1), "small": (2, 2), "medium": (2, 4), "large": (2, 8), "xlarge": (4, 16),
              "2xlarge": (8, 32)}

# Accelerated families: size -> (vCPUs, GiB, accelerators). The accelerator is a GPU unless named below.
_ACCELERATED: dict[str, dict[str, tuple[int, int, int]]] = {
    "p2": {"xlarge": (4, 61, 1), "8xlarge": (32, 488, 8), "16xlarge": (64, 732, 16)},
    "p3": {"2xlarge": (8, 61, 1), "8xlarge": (32, 244, 4), "16xlarge": (64, 488, 8)},
    "p3dn": {"24xlarge": (96, 768, 8)},
    "p4d": {"24xlarge": (96, 1152, 8)},
    "p4de": {"24xlarge": (96, 1152, 8)},
    "p5": {"4xlarge": (16, 256, 1), "48xlarge": (192, 2048, 8)},
    "p5e": {"48xlarge": (192, 2048, 8)},
    "p5en": {"48xlarge": (192, 2048, 8)},
    "p6-b200": {"48xlarge": (192, 2048, 8)},
    "p6-b300": {"48xlarge": (192, 4096, 8)},
    "p6e-gb200": {"36xlarge": (144, 960, 4)},
    "g4dn": {"xlarge": (4, 16, 1), "2xlarge": (8, 32, 1), "4xlarge": (16, 64, 1), "8xlarge": (32, 128, 1),
             "12xlarge": (48, 192, 4), "16xlarge": (64, 256, 1)},
    "g5": {"xlarge": (4, 16, 1), "2xlarge": (8, 32, 1), "4xlarge": (16, 64, 1), "8xlarge": (32, 128, 1),
           "12xlarge": (48, 192, 4), "16xlarge": (64, 256, 1), "24xlarge": (96, 384, 4),
           "48xlarge": (192, 768, 8)},
    "g6": {"xlarge": (4, 16, 1), "2xlarge": (8, 32, 1), "4xlarge": (16, 64, 1), "8xlarge": (32, 128, 1),
           "12xlarge": (48, 192, 4), "16xlarge": (64, 256, 1), "24xlarge": (96, 384, 4),
           "48xlarge": (192, 768, 8)},
    "g6e": {"xlarge": (4, 32, 1), "2xlarge": (8, 64, 1), "4xlarge": (16, 128, 1), "8xlarge": (32, 256, 1),
            "12xlarge": (48, 384, 4), "16xlarge": (64, 512, 1), "24xlarge": (96, 768, 4),
            "48xlarge": (192, 1536, 8)},
    "gr6": {"4xlarge": (16, 128, 1), "8xlarge": (32, 256, 1)},
    "g7e": {"2xlarge": (8, 64, 1), "4xlarge": (16, 128, 1), "8xlarge": (32, 256, 1), "12xlarge": (48, 512, 2),
            "24xlarge": (96, 1024, 4), "48xlarge": (192, 2048, 8)},
    # Neuron families: the count is NeuronCores (inf1: 4 per chip; inf2 / trn1: 2; trn2: 8).
    "inf1": {"xlarge": (4, 8, 4), "2xlarge": (8, 16, 4), "6xlarge": (24, 48, 16), "24xlarge": (96, 192, 64)},
    "inf2": {"xlarge": (4, 16, 2), "8xlarge": (32, 128, 2), "24xlarge": (96, 384, 12),
             "48xlarge": (192, 768, 24)},
    "trn1": {"2xlarge": (8, 32, 2), "32xlarge": (128, 512, 32)},
    "trn1n": {"32xlarge": (128, 512, 32)},
    "trn2": {"3xlarge": (12, 128, 8), "48xlarge": (192, 2048, 128)},
    "dl1": {"24xlarge": (96, 768, 8)},
}
_NEURON = {"inf1", "inf2", "trn1", "trn1n", "trn2"}
_HPU = {"dl1"}
_DEFAULT_GPU_GIB_PER_VCPU = 8.0  # a new GPU family not in the rows above (g7 ...): one GPU per instance


class UnknownInstanceType(ValueError):
    pass


def _size_vcpus(size: str) -> int:
    if size in _SIZE_VCPUS:
        return _SIZE_VCPUS[size]
    m = re.fullmatch(r"(\d+)xlarge", size)
    if not m:
        raise UnknownInstanceType(size)
    return 4 * int(m.group(1))


def builtin_resources(instance_type: str) -> InstanceResources:
    """The resources of ``ml.<family>.<size>`` by the table and AWS's naming rules."""
    parts = instance_type.split(".")
    if len(parts) != 3 or parts[0] != "ml":
        raise UnknownInstanceType(f"{instance_type!r} is not an ml.<family>.<size> instance type")
    family, size = parts[1], parts[2]
    if family in _ACCELERATED:
        row = _ACCELERATED[family].get(size)
        if row is None:  # a size AWS added later: the family's first row, scaled by vCPUs (accelerators kept)
            cpu, gib, acc = next(iter(_ACCELERATED[family].values()))
            vcpus = _size_vcpus(size)
            row = (vcpus, int(gib * vcpus / cpu), acc)
        cpu, gib, acc = row
        if family in _NEURON:
            return InstanceResources(cpu, gib, neuron_cores=acc)
        if family in _HPU:
            return InstanceResources(cpu, gib, hpus=acc)
        return InstanceResources(cpu, gib, gpus=acc)
    if family == "geospatial":  # ml.geospatial.interactive, a Studio app type
        return InstanceResources(4, 16)
    if family.startswith(("p", "g")):  # a GPU family newer than the table
        vcpus = _size_vcpus(size)
        return InstanceResources(vcpus, vcpus * _DEFAULT_GPU_GIB_PER_VCPU, gpus=1)
    if family.startswith("t") and size in _BURSTABLE:
        cpu, gib = _BURSTABLE[size]
        if family == "t2" and size in ("micro", "small"):
            cpu = 1
        return InstanceResources(cpu, gib)
    vcpus = _size_vcpus(size)
    per = _FAMILY_GIB_PER_VCPU.get(family.split("-")[0]) or _CLASS_GIB_PER_VCPU.get(family[0])
    if per is None:
        raise UnknownInstanceType(f"no memory rule for instance family {family!r}")
    return InstanceResources(vcpus, vcpus * per)


class InstanceTypes:
    """The table plus the operator's overrides; ``resources(t)`` is what a bundle for ``t`` needs."""

    def __init__(self, overrides: dict[str, InstanceResources] | None = None) -> None:
        self.overrides = dict(overrides or {})

    @classmethod
    def load(cls, path: Path | None) -> InstanceTypes:
        """Overrides from a JSON file (missing file: none). A bad file is an error at start, not at job time."""
        if path is None or not Path(path).exists():
            return cls()
        raw = json.loads(Path(path).read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected an object mapping instance types to resources")
        overrides = {}
        for name, row in raw.items():
            try:
                overrides[name] = InstanceResources(**row)
            except TypeError as exc:
                raise ValueError(f"{path}: {name}: {exc} (fields: {', '.join(asdict(InstanceResources(0, 0)))})") \
                    from None
        return cls(overrides)

    def resources(self, instance_type: str) -> InstanceResources:
        if instance_type in self.overrides:
            return self.overrides[instance_type]
        return builtin_resources(instance_type)
