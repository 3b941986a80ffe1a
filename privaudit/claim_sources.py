"""What the papers themselves report for each claim that `privaudit.claims` checks.

`PAPER_RESULTS` maps a claim key (`privaudit.claims.CLAIMS`) to the paper's side of the claims
table: ``paper`` (short citation), ``where`` (table / figure / section), ``setting`` (the paper's
setting in one line), ``result`` (the paper's numbers for exactly this comparison, in %, as printed)
and ``quote`` (a short verbatim phrase supporting the claim). Where a paper gives no number,
``result`` says so; no number here is derived or estimated.

Sources are the Markdown copies in ``shared/papers/``: ``fedgc.md`` (FedGC), ``fedfr.md`` (FedFR),
``privacyface.md`` (PrivacyFace), ``fedfs-summary.md`` (an automated summary of FedFS, not the
paper) and ``survey-fl-face-recognition.md``. FedFace's own paper is not among them: its entry uses
what FedFR and PrivacyFace report about their re-implementations of FedFace.

Conventions and caveats:

* Quotes are verbatim up to joining wrapped lines and dropping line-break hyphens; ``...`` marks
  an omission.
* ``privacyface.md`` is OCR text that loses the hat of p̂: in its Table 1 the private row φ+p̂ is
  the one carrying the ``(+x)`` gain over φ, which is also the "PrivacyFace" row of its Tables 3,
  4, 6 and 7 (privacy cost 1); the other row is φ+p.
* ``fedfr.md`` cites its ablation as "Table. ??"; the ablation (FedAvg; + hard-negative global
  data; + contrastive; + DFC = full FedFR) is its Table 1. Its Table 3 is the supplementary
  "Choices of models on Personalized Evaluation".
* The papers' operating points differ from ``privaudit.claims.GENERIC`` (TAR@FAR=1e-3): FedGC
  reports IJB-C TPR@FPR=1e-3, FedFR IJB-C TAR@FAR=1e-5/1e-4, PrivacyFace IJB-B/C TAR@FAR=1e-4.
"""

from __future__ import annotations

PAPER_RESULTS: dict[str, dict[str, str]] = {
    "fedgc>fedpe": {
        "paper": "FedGC (Niu & Deng, AAAI 2022)",
        "where": "Table 7 (IJB-B/IJB-C), Table 5 (LFW and 6 other verification sets); also Table 6 (MegaFace)",
        "setting": (
            "CASIA-WebFace randomly divided into 36 identity-disjoint clients (identities per client not stated; "
            "the paper says 'about 1,000 subjects'), ResNet-34, lr 0.1 constant, batch 256; "
            "Softmax (highlighted: all ablations), CosFace m=0.35, ArcFace m=0.5"
        ),
        "result": (
            "IJB-C verification TPR@FPR=1e-3 71.33 (FedGC) vs 57.85 (FedPE), softmax loss "
            "[CosFace 83.40 vs 77.12; ArcFace 78.13 vs 75.74]; LFW accuracy 98.40 (FedGC) vs 94.77 (FedPE), "
            "softmax loss [CosFace 98.83 vs 98.17; ArcFace 98.65 vs 98.18]"
        ),
        "quote": "FedGC shows significant improvements and surpasses all candidates by a large margin.",
    },
    "fedgc-softmax>fedgc-cos": {
        "paper": "FedGC (Niu & Deng, AAAI 2022)",
        "where": "Table 4 (Ablation Study, 'Cosine v.s. Softmax Regularizer')",
        "setting": "CASIA-WebFace, 36 identity-disjoint clients, ResNet-34, softmax loss; evaluated on LFW only",
        "result": (
            "LFW accuracy 98.40 (FedGC, softmax regulariser) vs 96.63 (FedCos, cosine regulariser) vs 94.77 (FedPE), "
            "softmax loss; no IJB-C / TAR number for FedCos"
        ),
        "quote": "Although cosine regularizer shows a better accuracy than FedPE, it is still worse than FedGC.",
    },
    "fedfr>fedavg:generic": {
        "paper": "FedFR (Liu, Wang, Chien & Lai, AAAI 2022)",
        "where": "Table 1 (ablation), row FedAvg (no module) vs row HN + contrastive + DFC (full FedFR)",
        "setting": (
            "MS-Celeb-1M 10k-ID subset: 6k IDs pre-train the model, 4k IDs over 40 clients x 100 IDs "
            "(60 train / 40 test images per ID); 64-layer CNN, 512-d; CosFace m=0.4 s=30; 30 rounds x 4 epochs; "
            "generic evaluation on IJB-C"
        ),
        "result": (
            "IJB-C 1:1 TAR@FAR=1e-5 / 1e-4: 77.60 / 85.21 (FedFR) vs 73.79 / 83.71 (FedAvg); "
            "1:N TPIR@FPIR=1e-2 / 1e-1: 73.60 / 81.27 vs 67.59 / 78.53 "
            "(pre-trained model: 76.42 / 84.58 / 72.06 / 80.30)"
        ),
        "quote": (
            "which directly optimizes the model with local data and perform FedAvg on the server cannot perform well"
        ),
    },
    "fedfr>fedavg:personalised": {
        "paper": "FedFR (Liu, Wang, Chien & Lai, AAAI 2022)",
        "where": (
            "Table 1, personalised columns, row FedAvg vs full FedFR "
            "(Table 2 compares DFC with fine-tune / KD adaptation, not with FedAvg)"
        ),
        "setting": (
            "MS-Celeb-1M, 40 clients x 100 IDs, 40 held-out images per registered ID, metrics averaged over clients; "
            "64-layer CNN, CosFace; FedFR evaluated with [local backbone, DFC transform], FedAvg with the local model"
        ),
        "result": (
            "personalised 1:1 TAR@FAR=1e-6 / 1e-5: 88.32 / 95.46 (FedFR) vs 67.33 / 85.70 (FedAvg); "
            "1:N TPIR@FPIR=1e-5 / 1e-4: 95.17 / 97.94 vs 82.77 / 92.27"
        ),
        "quote": (
            "Each technique in FedFR could substantially improve both generic and personalized face representations."
        ),
    },
    "fedfr:hn>fedavg": {
        "paper": "FedFR (Liu, Wang, Chien & Lai, AAAI 2022)",
        "where": "Table 1 (ablation; not Table 3), row 2 FedAvg vs row 3 + HN-sampled global data",
        "setting": (
            "MS-Celeb-1M, 40 clients x 100 IDs, 64-layer CNN, CosFace; generic on IJB-C, personalised per client"
        ),
        "result": (
            "generic TAR@FAR=1e-5/1e-4, TPIR@FPIR=1e-2/1e-1: 76.79/84.64/72.76/80.76 (+HN) vs "
            "73.79/83.71/67.59/78.53 (FedAvg); personalised TAR@FAR=1e-6/1e-5, TPIR@FPIR=1e-5/1e-4: "
            "81.75/91.91/91.97/96.09 (+HN) vs 67.33/85.70/82.77/92.27 (FedAvg)"
        ),
        "quote": "not only the generic representation but also the personalized evaluation can be boosted",
    },
    "fedfr:contrastive>hn": {
        "paper": "FedFR (Liu, Wang, Chien & Lai, AAAI 2022)",
        "where": "Table 1 (ablation; not Table 3), row 3 + HN vs row 4 + HN + contrastive",
        "setting": (
            "MS-Celeb-1M, 40 clients x 100 IDs, 64-layer CNN, CosFace; generic on IJB-C, personalised per client"
        ),
        "result": (
            "generic TAR@FAR=1e-5/1e-4, TPIR@FPIR=1e-2/1e-1: 77.41/85.17/73.60/81.25 (+contrastive) vs "
            "76.79/84.64/72.76/80.76 (+HN); personalised TAR@FAR=1e-6/1e-5, TPIR@FPIR=1e-5/1e-4: "
            "77.77/89.57/89.58/94.60 (+contrastive) vs 81.75/91.91/91.97/96.09 (+HN), i.e. lower: holds on generic only"
        ),
        "quote": (
            "the performance improves greatly on generic evaluation ... a more generalized representation will harm "
            "the performance for recognizing specific identities on clients"
        ),
    },
    "fedfr:dfc>contrastive": {
        "paper": "FedFR (Liu, Wang, Chien & Lai, AAAI 2022)",
        "where": "Table 1 (ablation; not Table 3), row 4 + contrastive vs row 5 + DFC (full FedFR)",
        "setting": (
            "MS-Celeb-1M, 40 clients x 100 IDs, 64-layer CNN, CosFace + BCE (DFC); personalised row 5 uses "
            "[local backbone, DFC transform], row 4 the local backbone"
        ),
        "result": (
            "personalised TAR@FAR=1e-6/1e-5, TPIR@FPIR=1e-5/1e-4: 88.32/95.46/95.17/97.94 (+DFC) vs "
            "77.77/89.57/89.58/94.60 (+contrastive); generic TAR@FAR=1e-5/1e-4, TPIR@FPIR=1e-2/1e-1: "
            "77.60/85.21/73.60/81.27 vs 77.41/85.17/73.60/81.25"
        ),
        "quote": (
            "optimize this space with binary cross-entropy loss tailored for the personalization ... "
            "both of them can achieve superior results"
        ),
    },
    "fedfs>finetune": {
        "paper": "FedFS (arXiv:2407.16289), via fedfs-summary.md (an automated summary, not the paper)",
        "where": "fedfs-summary.md, 'Quick Facts' and 'Key Results' (no table or figure numbers given)",
        "setting": (
            "pre-trained on MS-Celeb-1M (MobileFaceNet); FL on DigiFace-1M and VGGFace, one identity per client "
            "(10,000 clients), FedAvg, SGD, 2 local epochs; intra-subject self-supervised loss with adaptive soft "
            "labels + cosine regulariser between global and personalised models"
        ),
        "result": (
            "no number for FedFS vs FedAvg + local fine-tuning: the summary gives only 'AUROC improvements of 16.7% "
            "and 9.7% on DigiFace-1M and VGGFace' (baseline not named) and 'Superior TPIR@FPIR=0.001' (no numbers)"
        ),
        "quote": "achieves superior performance compared to previous methods while protecting user data privacy",
    },
    "privacyface:phat>phi": {
        "paper": "PrivacyFace (Meng et al., ICLR 2022)",
        "where": "Table 1 (Sec. 4, 'Performances on Benchmarks'); also Fig. 5a and App. Tables 2, 6, 7",
        "setting": (
            "φ0 ResNet18 (512-d) pre-trained on CASIA-WebFace; FL on BUPT-Balancedface, 4 clients (one per race) "
            "x ~7K IDs, FedAvg, 10 rounds, lr 0.001, batch 512; CosFace and ArcFace; DPLC rho=1.3, T=512, Q=1, "
            "eps=1, delta ~5e-5"
        ),
        "result": (
            "IJB-C TAR@FAR=1e-4 73.72 (φ+p̂) vs 70.16 (φ), CosFace; 71.24 vs 60.98, ArcFace; IJB-B TAR@FAR=1e-4 "
            "71.63 vs 68.09 (CosFace), 68.25 vs 58.62 (ArcFace); eps=1 per round (paper: total = rounds x "
            "per-round cost, M=10); RFW gains 0.00-0.31"
        ),
        "quote": (
            "improvements on TAR@FAR=1e-4 on IJB-B and IJB-C are 3.54% and 3.56% with CosFace, "
            "and 9.63% and 10.26% with ArcFace"
        ),
    },
    "privacyface:phat~p": {
        "paper": "PrivacyFace (Meng et al., ICLR 2022)",
        "where": "Table 1 (Sec. 4); Fig. 5b (eps sweep, values only in the figure); App. Table 2 (FedSGD)",
        "setting": (
            "BUPT-Balancedface, 4 clients x ~7K IDs, ResNet18 from CASIA-WebFace, FedAvg 10 rounds; "
            "CosFace and ArcFace; DPLC rho=1.3, T=512, Q=1, eps=1 for p̂"
        ),
        "result": (
            "IJB-C TAR@FAR=1e-4 73.72 (φ+p̂) vs 73.73 (φ+p), CosFace; 71.24 vs 71.66, ArcFace; IJB-B 71.63 vs "
            "71.62 (CosFace), 68.25 vs 68.57 (ArcFace); FedSGD + ArcFace: identical 63.72 (IJB-B) / 68.73 (IJB-C)"
        ),
        "quote": "achieve very close results in all benchmarks. That implies the robustness of the proposed method.",
    },
    "privacyface:phat<W:attack": {
        "paper": "PrivacyFace (Meng et al., ICLR 2022)",
        "where": "App. A.2.4 (Figs. 6-8, k-NN and inversion attacks, images only); App. A.2.2 and Table 6 (DP cost)",
        "setting": (
            "class centres of BUPT-Balancedface from φ0; k-NN attack against an MS1M-V2 gallery (3 faces per ID); "
            "inversion by a DCGAN-style decoder trained on CASIA-WebFace features with L1 loss"
        ),
        "result": (
            "no attack-success number: Figs. 6-8 show retrieved / reconstructed faces only (k-NN shown for W only, "
            "inversion for W, p and p̂ at eps 0.1-1.5); only DP accounting is numeric: DPLC cost ~1.7e-7 of "
            "per-centre DP (A.2.2), privacy cost inf for sharing raw centres (FedFace) vs 1 (Table 6)"
        ),
        "quote": (
            "w carries human face privacy and therefore should be protected ... "
            "one can hardly recognize a face from the generated images"
        ),
    },
    "privacyface:phat>random": {
        "paper": "PrivacyFace (Meng et al., ICLR 2022)",
        "where": "not in the paper; rationale in Sec. 3.2 (Eq. 5) and Sec. 3.1 (Theorem 1); nearest: App. Table 3",
        "setting": "BUPT-Balancedface, 4 clients x ~7K IDs, ResNet18 from CASIA-WebFace, FedAvg 10 rounds, ArcFace",
        "result": (
            "no number: not in the paper; our control. Nearest analogue (not random vectors): naive DP on every "
            "class centre (φ+W, same per-round cost 1, 'very noisy'), IJB-C TAR@FAR=1e-4 35.82 vs 60.98 (φ) "
            "vs 71.24 (φ+p̂), ArcFace"
        ),
        "quote": (
            "learn a globally consistent embedding that can not only classify local classes, "
            "but also achieve consensuses with other clients on the incompatible clusters"
        ),
    },
    "fedface>fedavg:one-identity": {
        "paper": (
            "FedFace (Aggarwal, Zhou & Jain, IJCB 2021), own paper not available: "
            "as reported by FedFR (AAAI 2022) and PrivacyFace (ICLR 2022)"
        ),
        "where": "FedFR Fig. 4 ('Comparison with FedFace'); PrivacyFace App. A.2.5, Table 6; survey Sec. 2.4.2 (text)",
        "setting": (
            "FedFace: one identity per client, pre-trained CosFace model, mean-feature proxy init + server spreadout "
            "regulariser; FedFR Fig. 4 re-implements it with 100 clients and 40 down to 1 IDs per client, IJB-C"
        ),
        "result": (
            "no number for FedFace vs FedAvg with one identity per client: FedFR Fig. 4 has no FedAvg curve and no "
            "values in the text (FedFace falls below the pre-trained model); PrivacyFace Table 6 (4 clients x ~7K IDs, "
            "not one identity): IJB-B / IJB-C TAR@FAR=1e-4 59.40 / 63.25 (FedFace) vs 58.62 / 60.98 (FedAvg)"
        ),
        "quote": (
            "FedFace could easily over-fit on local dataset and performs inferior to the pre-trained model "
            "in these scenarios"
        ),
    },
}
