# Sourced by the device scripts that run after `run_engine_on_device.sh stash`
# (run_eval_on_device.sh, run_generate_on_device.sh), from the repository root.
# Also sourced by run_engine_on_device.sh for join_model_parts.
# join_model_parts: copies the parts of the model a call carries (.stage/model/*/, from
# tools/split_model_for_device.sh) into /root/stage, and once the last part has arrived (the
# checksum file travels with it) joins them into the model, dropping a join whose checksum
# does not match.
# device_stage: unpacks the staged binaries into /root/stage (unless already there), joins
# the model, checks its SHA-256, and puts the binaries' libraries and cuBLAS on
# LD_LIBRARY_PATH. Returns 1, saying why, when the model is missing or its checksum does not
# match.
stash=/root/stage
name=SmolLM2-135M-Instruct.Q4_1.gguf
join_model_parts() {
  mkdir -p "$stash"
  cp .stage/model/*/* "$stash/" 2>/dev/null
  # The checksum travels with the last part: once it is here, every part is.
  if [ ! -f "$stash/$name" ] && [ -f "$stash/$name.sha256" ] && ls "$stash/$name".part* >/dev/null 2>&1; then
    # shellcheck disable=SC2046  # the parts, in order
    cat $(ls "$stash/$name".part* | sort -V) >"$stash/$name"
    (cd "$stash" && sha256sum -c --status "$name.sha256") || rm -f "$stash/$name"
  fi
}
device_stage() {
  mkdir -p "$stash"
  [ -x "$stash/bin/sinkrouter" ] || tar -xJf .stage/engine/bin.tar.xz -C "$stash"
  join_model_parts
  if ! (cd "$stash" && sha256sum -c --status "$name.sha256" 2>/dev/null); then
    echo "model missing or checksum mismatch in $stash"
    return 1
  fi
  local cublas
  cublas=$(find -L /usr/local/cuda/lib64 $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) \
    -maxdepth 5 -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
  export LD_LIBRARY_PATH=$stash/lib:/usr/local/cuda/lib64:$(dirname "${cublas:-/x/x}"):${LD_LIBRARY_PATH:-}
}
