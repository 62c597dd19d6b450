# The pipeline in a container, on the embedded defaults (MLflow's sqlite store and a
# local-folder DVC remote inside the container):
#   docker build -t ml-research-template .
#   docker run --rm ml-research-template              # make pipeline
#   docker run --rm ml-research-template test PYTEST_ARGS="-m 'not slow'"
FROM python:3.11.7-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends git make \
    && rm -rf /var/lib/apt/lists/*

# A non-root user owns the project and runs it.
RUN useradd --create-home --uid 1000 researcher
USER researcher
WORKDIR /home/researcher/project
ENV PYTHON=python3.11 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1

# The locks first, in a layer of their own: code changes do not reinstall them.
COPY --chown=researcher:researcher Makefile requirements.txt requirements-team.txt requirements-dev.txt ./
RUN make venv

COPY --chown=researcher:researcher . .
RUN git config --global --add safe.directory /home/researcher/project \
    && git config --global user.name researcher \
    && git config --global user.email researcher@localhost

ENTRYPOINT ["make"]
CMD ["pipeline"]
