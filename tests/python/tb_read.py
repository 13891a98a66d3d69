"""Reads TensorBoard event files with the real `tensorboard` package and prints what it sees as JSON.

usage: tb_read.py PATH [--raw]

PATH is an event file or a run folder. The values come from TensorBoard's own loader
(`plugin_event_accumulator.EventAccumulator`, the one its server uses, which migrates legacy scalars,
histograms and images to tensors as the dashboards show them), with every event kept:

  {"scalars": {tag: [[step, value], ...]}, "histograms": {tag: [[step, [[left, right, count], ...]], ...]},
   "images": {tag: [[step, width, height, decoded_width, decoded_height], ...]}, "texts": {tag: [[step, text]]}}

Images are decoded with Pillow (their PNG bytes must decode). With --raw: the number of records read by
TensorBoard's record reader (CRC-checked; a cut-short last record is skipped) and the steps of every
summary value as read, in file order (PATH a file, or every event file of a folder by name):
{"records": N, "steps": {tag: [step, ...]}}.
"""

import io
import json
import os
import sys

from PIL import Image
from tensorboard.backend.event_processing import event_file_loader, plugin_event_accumulator
from tensorboard.util import tensor_util


def raw(path):
    files = [path]
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if "tfevents" in f)
    n, steps = 0, {}
    for f in files:
        for ev in event_file_loader.LegacyEventFileLoader(f).Load():
            n += 1
            for v in ev.summary.value:
                steps.setdefault(v.tag, []).append(ev.step)
    return {"records": n, "steps": steps}


def main():
    path = sys.argv[1]
    if "--raw" in sys.argv:
        print(json.dumps(raw(path)))
        return
    acc = plugin_event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
    acc.Reload()
    out = {"scalars": {}, "histograms": {}, "images": {}, "texts": {}}
    for tag in acc.Tags()["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        for ev in acc.Tensors(tag):
            arr = tensor_util.make_ndarray(ev.tensor_proto)
            if plugin == "scalars":
                out["scalars"].setdefault(tag, []).append([ev.step, float(arr)])
            elif plugin == "histograms":
                out["histograms"].setdefault(tag, []).append([ev.step, arr.astype(float).tolist()])
            elif plugin == "images":
                w, h, png = int(arr[0]), int(arr[1]), arr[2]
                img = Image.open(io.BytesIO(png))
                img.load()
                out["images"].setdefault(tag, []).append([ev.step, w, h, img.width, img.height])
            elif plugin == "text":
                out["texts"].setdefault(tag, []).append([ev.step, arr.item().decode()])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
