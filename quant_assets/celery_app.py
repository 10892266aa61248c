"""The Celery app of the ``celery`` execution profile: what ``quant-assets worker`` serves.

dagster-celery's documented way to use a broker other than its default (RabbitMQ on
localhost): a module that builds the app with our broker and backend and registers Dagster's
step task on it, named by ``celery -A``. Launcher and workers read the same settings
(``$QUANT_CELERY_BROKER``, ``$QUANT_CELERY_BACKEND``), so they meet on the same queue.

Workers must see the same lake (``$QUANT_LAKE``) and the same Dagster instance
(``$DAGSTER_HOME``) as the process that launches the runs: each task reads its run from the
instance, executes one step of the reconstructed job and writes its events back.
"""

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from quant_assets.settings import celery_backend, celery_broker

#: Celery settings shared by the launcher (the executor config) and the workers.
CONFIG_SOURCE = {
    # One step at a time per worker process: a step holds a month of ticks in an engine.
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}

app = make_app({"broker": celery_broker(), "backend": celery_backend(), "include": [], "config_source": CONFIG_SOURCE})

execute_plan = create_task(app)
