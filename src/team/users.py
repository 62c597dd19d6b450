"""`make team-user`: a user on the tracking server with a role on the experiment and the registered model."""

from __future__ import annotations

import contextlib
import warnings

from src.team.stack import ROLES, StackError, say


def add_user(name: str, role: str, password: str, experiment_name: str, model_name: str) -> None:
    """Create `name` on the tracking server (or keep the existing user) and grant it `role` where the project works.

    The role goes on the experiment (its runs) and on the registered model
    (`make promote`, `make retrain`): edit can run, promote and retrain, read can
    only read, manage can also grant. The registered model is created, empty, if
    no one has promoted yet, so that the right exists before the first promote.

    Raises:
        StackError: Without a tracking server, or when the server refuses, saying why.
    """
    from mlflow.exceptions import MlflowException

    from src.tracking.client import (
        describe_tracking_error,
        experiment_id_for,
        import_mlflow,
        tracking_uri,
        uses_tracking_server,
    )

    uri = tracking_uri()
    if not uses_tracking_server():
        raise StackError(
            f"make team-user needs a tracking server, and MLFLOW_TRACKING_URI is {uri}: run `make team-up` first"
        )
    mlflow = import_mlflow()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # starlette's, raised as mlflow.server loads
        from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=uri)
    client = mlflow.MlflowClient()
    try:
        resources = {"experiment": experiment_id_for(client, experiment_name), "registered_model": model_name}
        try:
            client.create_registered_model(model_name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        created = False
        try:
            auth.get_user(name)
        except MlflowException as error:
            if error.get_http_status_code() != 404:
                raise
            auth.create_user(name, password)
            created = True
        for resource_type, resource_id in resources.items():
            with contextlib.suppress(MlflowException):  # a grant cannot overwrite one: revoke it first
                auth.revoke_user_permission(name, resource_type, resource_id)
            auth.grant_user_permission(name, resource_type, resource_id, ROLES[role])
    except MlflowException as error:
        raise StackError(f"{uri} refused to set up user {name!r}: {describe_tracking_error(error)}") from None
    where = f"on experiment {experiment_name!r} and registered model {model_name!r}"
    if created:
        say(f"Created user {name} with {ROLES[role]} {where} at {uri}.")
        say(f"Their team.env: MLFLOW_TRACKING_USERNAME={name} and MLFLOW_TRACKING_PASSWORD={password}")
    else:
        say(f"User {name} exists; it now has {ROLES[role]} {where} (same password).")
