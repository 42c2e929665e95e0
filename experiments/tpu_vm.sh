#!/usr/bin/env bash
# Trains a gan_jax experiment on a Cloud TPU VM (one host or a multi-host pod slice), with the
# run's workdir on a Cloud Storage bucket.
#
# Run from the repository root on a machine with the gcloud CLI, logged in (`gcloud auth login`)
# and with a project that has the TPU API enabled:
#
#   BUCKET=my-bucket experiments/tpu_vm.sh all      # create the VM, install, launch
#   experiments/tpu_vm.sh logs                      # follow worker 0's output
#
# Steps (each one a subcommand; `all` runs the first three):
#   create   gcloud compute tpus tpu-vm create: the VM (every worker of a slice).
#   install  on every worker (--worker=all): Python 3.11, a virtual environment,
#            `pip install -r requirements-tpu.txt` (jax[tpu] and the project's dependencies),
#            then the project itself from SOURCE.
#   launch   on every worker: `python -m gan_jax.main --config experiments/$EXPERIMENT.py
#            --workdir gs://$BUCKET/$RUN --distributed=on $EXTRA_FLAGS`, in the background,
#            output in ~/gan_jax_$RUN.log on each worker. Every worker runs the same command; JAX finds the
#            slice's other workers by itself and each feeds its own devices.
#   logs     follow worker 0's log (process 0 writes the logs; every worker trains).
#   stop     SIGTERM to the run on every worker: it saves a checkpoint at its step and exits.
#   delete   delete the VM (the bucket keeps the run).
#
# Settings (environment variables; default in brackets):
#   TPU_NAME          [gan-jax]               name of the TPU VM
#   ZONE              [us-central2-b]         a zone that has ACCELERATOR_TYPE
#   ACCELERATOR_TYPE  [v4-8]                  e.g. v4-8 (one host), v4-32 (4 hosts), v5litepod-8
#   RUNTIME_VERSION   [tpu-ubuntu2204-base]   TPU software version (v5e: v2-alpha-tpuv5-lite)
#   PROJECT           [gcloud's default]      Google Cloud project
#   SPOT              [0]                     1: a Spot VM (cheaper; can be preempted at any time)
#   EXPERIMENT        [dcgan_mnist]           a file experiments/<EXPERIMENT>.py
#   BUCKET            (required by launch)    the workdir is gs://$BUCKET/$RUN
#   RUN               [$EXPERIMENT]           the run's name in the bucket
#   SOURCE            [tarball]               "tarball": this checkout's committed HEAD
#                                             (`git archive`, copied to every worker with scp);
#                                             or a git URL to clone on every worker
#   REF               [main]                  branch, tag or commit of a git SOURCE
#   EXTRA_FLAGS       []                      more flags, e.g. "--config.num_steps=20000"
#
# Resuming: rerun `experiments/tpu_vm.sh launch` with the same settings. The run restores the
# latest checkpoint in gs://$BUCKET/$RUN/checkpoints and continues bit-exactly from that step;
# metrics.jsonl continues too (logs, images and plots are written on worker 0 and copied to the
# bucket after every checkpoint and at the end; TensorBoard reads gs://$BUCKET/$RUN/tensorboard).
#
# Preemption: a Spot (or maintenance-preempted) TPU VM gets SIGTERM before it stops. The run then
# finishes the dispatch in flight, saves a checkpoint at that step on every worker together, and
# exits 0; a checkpoint that was being written when the VM died is never used (only complete ones
# are). A preempted TPU VM does not come back by itself: `experiments/tpu_vm.sh delete`, then
# `experiments/tpu_vm.sh all` with the same settings creates a new one and resumes the run.
#
# Checked here only with `bash -n` and shellcheck; it needs a Google Cloud project to run.
set -euo pipefail

TPU_NAME=${TPU_NAME:-gan-jax}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
PROJECT=${PROJECT:-}
SPOT=${SPOT:-0}
EXPERIMENT=${EXPERIMENT:-dcgan_mnist}
BUCKET=${BUCKET:-}
RUN=${RUN:-$EXPERIMENT}
SOURCE=${SOURCE:-tarball}
REF=${REF:-main}
EXTRA_FLAGS=${EXTRA_FLAGS:-}

# Paths on the workers ($HOME is expanded there).
REMOTE_DIR="\$HOME/gan_jax"
REMOTE_VENV="\$HOME/gan_jax_venv"
REMOTE_LOG="\$HOME/gan_jax_${RUN}.log"
REMOTE_PID="\$HOME/gan_jax_${RUN}.pid"

cd "$(dirname "$0")/.."

GCLOUD_FLAGS=(--zone="$ZONE")
if [[ -n $PROJECT ]]; then
  GCLOUD_FLAGS+=(--project="$PROJECT")
fi

die() {
  echo "tpu_vm.sh: $*" >&2
  exit 1
}

# Runs a shell command on the given worker(s): on_workers all|0 'command'.
on_workers() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --worker="$1" --command="$2"
}

create() {
  local flags=(--accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
  if [[ $SPOT == 1 ]]; then
    flags+=(--spot)
  fi
  gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_FLAGS[@]}" "${flags[@]}"
}

copy_source() {
  if [[ $SOURCE == tarball ]]; then
    local tarball
    tarball=$(mktemp --suffix=.tar.gz)
    git archive --format=tar.gz -o "$tarball" HEAD
    gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME":gan_jax.tar.gz \
      "${GCLOUD_FLAGS[@]}" --worker=all
    rm -f "$tarball"
    on_workers all "rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && \
      tar -xzf \$HOME/gan_jax.tar.gz -C $REMOTE_DIR"
  else
    on_workers all "rm -rf $REMOTE_DIR && git clone --quiet $(printf %q "$SOURCE") $REMOTE_DIR \
      && git -C $REMOTE_DIR checkout --quiet $(printf %q "$REF")"
  fi
}

install() {
  # The TPU images run Ubuntu 22.04, whose python3 is 3.10; the project needs 3.11.
  on_workers all "sudo apt-get update -qq && \
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv git"
  copy_source
  on_workers all "python3.11 -m venv $REMOTE_VENV && \
    $REMOTE_VENV/bin/pip install --quiet --upgrade pip && \
    $REMOTE_VENV/bin/pip install --quiet -r $REMOTE_DIR/requirements-tpu.txt && \
    $REMOTE_VENV/bin/pip install --quiet --no-deps -e $REMOTE_DIR && \
    $REMOTE_VENV/bin/python -c 'import jax; print(jax.process_index(), jax.devices())'"
}

launch() {
  [[ -n $BUCKET ]] || die "set BUCKET: the run's workdir is gs://\$BUCKET/\$RUN"
  [[ -f experiments/$EXPERIMENT.py ]] || die "no experiments/$EXPERIMENT.py"
  local workdir="gs://$BUCKET/$RUN"
  local command
  command="cd $REMOTE_DIR && setsid nohup $REMOTE_VENV/bin/python -m gan_jax.main \
    --config experiments/$(printf %q "$EXPERIMENT").py --workdir $(printf %q "$workdir") \
    --distributed=on $EXTRA_FLAGS > $REMOTE_LOG 2>&1 < /dev/null & echo \$! > $REMOTE_PID"
  on_workers all "$command"
  echo "launched $EXPERIMENT on $TPU_NAME; workdir $workdir"
  echo "follow it with: TPU_NAME=$TPU_NAME ZONE=$ZONE RUN=$RUN experiments/tpu_vm.sh logs"
}

logs() {
  on_workers 0 "tail -n 100 -F $REMOTE_LOG"
}

stop() {
  on_workers all "kill -TERM \$(cat $REMOTE_PID) 2>/dev/null || true"
}

delete() {
  gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --quiet
}

case "${1:-}" in
  create) create ;;
  install) install ;;
  launch) launch ;;
  logs) logs ;;
  stop) stop ;;
  delete) delete ;;
  all)
    [[ -n $BUCKET ]] || die "set BUCKET: the run's workdir is gs://\$BUCKET/\$RUN"
    create
    install
    launch
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
