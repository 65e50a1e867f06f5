#!/usr/bin/env bash
# The first run: set up (tools/setup_env.sh), then train Mask R-CNN from scratch on the
# generated shapes dataset (no download), evaluate it (COCO box and mask AP), and draw
# pictures: predictions and ground truth on validation images, and the training curves.
# Everything lands in output/quickstart/. Extra arguments are config overrides, e.g.
#     bash tools/quickstart.sh SOLVER.MAX_ITER 100
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_env.sh

config=configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml
out=output/quickstart
start=$(date +%s)
echo "== training and evaluating $config (about 7 minutes on 2 CPU cores)"
python tools/train_net.py --config-file "$config" OUTPUT_DIR "$out" "$@"

echo "== drawing pictures"
val_images=$(python -c "from detbench.data.datasets.shapes import ensure_shapes; print(ensure_shapes(split='val')[0])")
python tools/visualize.py --config-file "$config" --input "$val_images" --num-images 8 \
  --output "$out/pictures/predictions" --confidence-threshold 0.5 \
  OUTPUT_DIR "$out" MODEL.WEIGHT "$out/model_final.pth" "$@"
python tools/visualize.py --config-file "$config" --dataset shapes_val --num-images 8 \
  --output "$out/pictures/ground_truth" OUTPUT_DIR "$out" "$@"

echo "== done in $(( $(date +%s) - start )) s (setup excluded). Look at:"
echo "   $out/log.txt                      training log and the COCO AP tables"
echo "   $out/training_curves.png          losses, learning rate and AP over the iterations"
echo "   $out/pictures/predictions/        the model's detections on 8 validation images"
echo "   $out/pictures/ground_truth/       the annotations of the same images"
