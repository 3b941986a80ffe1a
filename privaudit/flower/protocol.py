"""The names both sides of privaudit's generic Flower apps agree on.

A phase of a round is one Flower message per SuperNode (type `PHASE_TYPE`): a ``"job"`` record
(JSON: the job id, round, phase, phase index, the `FederatedConfig`, torch's thread count, the
node's participating clients and, per client, the indices of the messages of its inbox), the
inbox messages once each (``"m.<k>"``, see `privaudit.flower.codec`) and each participant's state
(``"s.<client id>"``). The reply holds, per participant, ``"r.<id>"`` (JSON ``{"ok", "error",
"uploads"}``), its uploads ``"u.<id>.<k>"`` and its new state ``"s.<id>"``.

At the start of a job the server asks every node which logical clients it hosts (`HOSTS_TYPE`).
"""

from __future__ import annotations

PHASE_TYPE = "train.privaudit_phase"
HOSTS_TYPE = "query.privaudit_hosts"
JOB_KEY = "job"
HOSTS_KEY = "hosts"
ROOT_CONFIG_KEY = "privaudit-root"
PARTITION_KEY = "partition-id"


def message_key(index: int) -> str:
    return f"m.{index}"


STATE_PREFIX = "s."


def state_key(client_id: int) -> str:
    return f"{STATE_PREFIX}{client_id}"


def result_key(client_id: int) -> str:
    return f"r.{client_id}"


def upload_key(client_id: int, index: int) -> str:
    return f"u.{client_id}.{index}"


def job_folder(root: str, job: int) -> str:
    """The folder (under a node's data root) holding job ``job``'s shards."""
    return f"{root}/job-{int(job)}"
