# Shared by the study scripts of bench/ (sweep_baselines.sh, specialists.sh, loc_sweep.sh); source it
# from the repository root. Each run trains on one thread into runs/NAME with its log in
# runs/logs/NAME.log, resumes where an earlier attempt stopped, and is skipped once runs/NAME/model
# exists.

run_name() {  # run_name CONFIG: the run folder's name of a config (the last part of its run_dir)
  python -c "import pathlib, sys, yaml; print(pathlib.Path(yaml.safe_load(open(sys.argv[1]))['run_dir']).name)" "$1"
}

train_run() {  # train_run NAME ARGS…: cola-mm train ARGS… into runs/NAME
  local name=$1; shift
  if [ -d "runs/$name/model" ]; then echo "skip $name (runs/$name/model exists)"; return; fi
  echo "train $name"
  mkdir -p runs/logs
  OMP_NUM_THREADS=1 cola-mm train "$@" --set "run_dir=runs/$name" --resume-if-any --no-progress \
    > "runs/logs/$name.log" 2>&1
}

train_all() {  # lines "NAME ARGS…" on standard input: train_run of each, PARALLEL (default 2) at a time
  xargs -P "${PARALLEL:-2}" -I{} bash -c 'source bench/train_runs.sh && train_run {}'
}
