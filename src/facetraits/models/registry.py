"""Trained models as MLflow 3 models: a LoggedModel per network (the Models tab), registered with an alias.

Written through the stage's client, not MLflow's fluent API, so no global tracking URI or active run is set.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from facetraits.models.components.ensemble import WeightedEnsemble
from facetraits.models.components.net import FaceTraitsNet
from facetraits.tracking import TAG_STUDY, TAG_VARIANT, StageRun, mlflow_environment

MODEL_TYPE = "facetraits-ratings"
TAG_SCORE = "val_pearson_mean"  # on each registered version: what the champion alias is chosen by


def model_name(run: StageRun, attribute: str | None = None) -> str:
    """The method a model belongs to, as the report's headline keys it: `main` or the variant's name (from the
    run's variant tag), plus `-<attribute>` for a per-attribute model. The Models tab lists models by it, and
    `runs:/<run_id>/<name>` loads it."""
    method = run.client.get_run(run.run_id).data.tags.get(TAG_VARIANT, "main")
    return method if attribute is None else f"{method}-{attribute}"


def log_model(run: StageRun, net: FaceTraitsNet | WeightedEnsemble, name: str, params: Mapping[str, str] | None = None) -> str:
    """Save with mlflow.pytorch as a LoggedModel of the run (signature, input example, a network's target
    statistics); its id.

    Requirements are pinned so MLflow does not probe the environment (seconds); the default torch.export format
    stores no pickled code. Loads back from `models:/<id>` or `runs:/<run_id>/<name>`.
    """
    import mlflow.pytorch  # heavy (imports Lightning autologging): only the train stage needs it
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature

    net.eval()
    example = torch.rand(2, 3, net.image_size, net.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = net(example)
    metadata = {
        "attributes": list(net.attributes),
        "image_size": net.image_size,
        "input": "float32 RGB in [0, 1], shape (batch, 3, image_size, image_size); faces squared as in prepare",
        "output": "ratings in the data set's units, one column per attribute",
    }
    if isinstance(net, FaceTraitsNet):  # an ensemble's members each have their own
        metadata |= {"target_mean": net.target_mean.tolist(), "target_std": net.target_std.tolist()}
    client = run.client
    logged = client.create_logged_model(
        run.experiment_id, name=name, source_run_id=run.run_id, params=dict(params or {}), model_type=MODEL_TYPE,
        tags={"facetraits.attributes": ",".join(net.attributes)},
    )  # fmt: skip
    client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=0)])
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"torchvision=={torchvision.__version__.split('+')[0]}"]
    described = Model(
        artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run.run_id, metadata=metadata,
        model_id=logged.model_id,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="facetraits-model-") as tmp:
        mlflow.pytorch.save_model(
            net,
            Path(tmp) / name,
            mlflow_model=described,
            signature=infer_signature(example.numpy(), output.numpy()),
            input_example=example.numpy(),
            pip_requirements=requirements,
        )
        client.log_model_artifacts(logged.model_id, str(Path(tmp) / name))
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged.model_id


def register_model(run: StageRun, model_id: str, name: str, alias: str, score: float | None, description: str) -> str:
    """A new version of registered model `name`; `alias` moves to it when it is the best (by mean val Pearson)
    of its study so far, or the first of a new study: the alias names the latest study's best model."""
    client = run.client
    try:
        client.create_registered_model(name, description="facetraits attribute-rating models, one version per trained model")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    study = run.study.key if run.study is not None else ""
    tags = {TAG_STUDY: study, TAG_SCORE: "" if score is None else f"{score:.6f}"}
    # the store checks the `models:/` source in the tracking store MLflow's own default names (its environment), not
    # the client's: one that no Lightning logger has pointed at this store (the ensemble stage's) would look elsewhere
    with mlflow_environment(MLFLOW_TRACKING_URI=client.tracking_uri, MLFLOW_REGISTRY_URI=client.tracking_uri):
        version = client.create_model_version(
            name, source=f"models:/{model_id}", run_id=run.run_id, tags=tags, description=description, model_id=model_id
        )
    link_version(run, model_id, name, version.version)
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    if current is None or current.tags.get(TAG_STUDY, "") != study or _beats(score, current.tags.get(TAG_SCORE, "")):
        client.set_registered_model_alias(name, alias, version.version)
    return version.version


def link_version(run: StageRun, model_id: str, name: str, version: str) -> None:
    """The logged model's page shows its registered versions from this tag, which `mlflow.register_model` and the
    server's REST handler write but a client on a local store does not."""
    client = run.client
    linked = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
    if not any((entry.get("name"), str(entry.get("version"))) == (name, str(version)) for entry in linked):
        linked.append({"name": name, "version": str(version)})
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(linked)})


def _beats(score: float | None, current: str) -> bool:
    return score is not None and (not current or score > float(current))
