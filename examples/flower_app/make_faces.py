"""Write synthetic faces as an identity-per-folder tree for the example (privaudit's generator).

    python make_faces.py --out faces/ --identities 12 --images 6

``FACES/faces.json`` is what the auditor knows about the data: how the faces were made (the
generator's settings), so that `privaudit attack` can render faces of any identity for its
galleries, and the recipe of its independent evaluator (φ0's pre-training config of the tiny
scale, on identities disjoint from these). The attacks on this app's wire render faces with that
generator, or read them from an auditor's photo tree (`run.py --audit-folder`: e.g. this script's
output with more identities than the app's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from PIL import Image

from federated_core.data import SyntheticFaces
from privaudit.presets import pretrain_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--identities", type=int, default=12)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--first-identity", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    recipe = pretrain_config("tiny", seed=args.seed)
    generator = dataclasses.asdict(recipe.data)
    ids = list(range(args.first_identity, args.first_identity + args.identities))
    faces = SyntheticFaces(**{k: v for k, v in generator.items() if v is not None}).make_set(ids, args.images)
    for n, (image, label) in enumerate(zip(faces.images, faces.labels)):
        folder = out / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{n % args.images}.png")
    data_spec = {
        "source": "synthetic",
        "generator": generator,
        "render": "federated_core.data.SyntheticFaces(**generator).make_set(identities, images_per_identity, start_index)",
    }
    audit = {"data_spec": data_spec, "run_config": {"pretrain": recipe.to_dict()}}
    (out / "faces.json").write_text(json.dumps(audit, indent=1))
    print(f"{len(ids)} identities x {args.images} images -> {out}")


if __name__ == "__main__":
    main()
