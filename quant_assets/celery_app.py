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

from quant_assets.settings import celery_config, celery_backend, celery_broker

app = make_app({"broker": celery_broker(), "backend": celery_backend(), "include": [], "config_source": celery_config()})

execute_plan = create_task(app)
