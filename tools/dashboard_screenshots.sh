#!/usr/bin/env bash
# Retakes the README's TensorBoard screenshots (docs/images/tensorboard_*.png): two short CPU runs
# on the CIFAR-10 JPEG copy (512 training images an epoch, 3 epochs, two models, so the run
# list shows two names), TensorBoard over them, and headless Chromium on its SCALARS, IMAGES and
# HPARAMS tabs. A few minutes on a 2-core CPU.
#
#   tools/dashboard_screenshots.sh path/to/cifar10-jpeg.tar.gz [work dir]
#
# Needs: this package installed (python on PATH, or PYTHON=…), and Chromium (Debian: apt-get
# install chromium; CHROMIUM=… for another binary).
set -euo pipefail
data=${1:?usage: $0 path/to/cifar10-jpeg.tar.gz [work dir]}
work=${2:-$(mktemp -d)}
python=${PYTHON:-python}
chromium=${CHROMIUM:-chromium}
docs=$(cd "$(dirname "$0")/.." && pwd)/docs/images
port=${PORT:-6117}

for model in depthwise simple_cnn; do
  "$python" -m cifar_lightning.train model=$model trainer=cpu data=imagefolder data.root="$data" \
    data.val_size=1000 data.batch_size=64 data.num_workers=0 trainer.max_epochs=3 \
    trainer.limit_train_batches=8 trainer.limit_val_batches=4 trainer.limit_test_batches=16 \
    trainer.enable_progress_bar=false paths.output_root="$work/outputs" \
    paths.data_dir="$work/data"
  sleep 1  # a new second: a new run dir
done

"$python" -m tensorboard.main --logdir "$work/outputs" --host 127.0.0.1 --port $port \
  >"$work/tensorboard.log" 2>&1 &
server=$!
trap 'kill $server' EXIT
until curl -sf "http://127.0.0.1:$port/data/runs" | grep -q simple_cnn; do sleep 1; done

shoot() {  # $1: name, $2: the URL's fragment
  "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1000 \
    --virtual-time-budget=15000 --screenshot="$work/$1.png" \
    "http://127.0.0.1:$port/#$2" 2>/dev/null
  # Fewer colours: a UI screenshot keeps its look at a quarter of the bytes.
  "$python" -c "from PIL import Image; Image.open('$work/$1.png').convert('RGB').quantize(64)\
.save('$docs/tensorboard_$1.png', optimize=True)"
  echo "$docs/tensorboard_$1.png"
}
shoot custom_scalars "custom_scalars"
shoot scalars "scalars&tagFilter=%5E(train%7Cval)%2F"   # ^(train|val)/
shoot images "images&tagFilter=%5E(curves%7Ctest%2Fconfusion_matrix)%24"
shoot hparams "hparams"
