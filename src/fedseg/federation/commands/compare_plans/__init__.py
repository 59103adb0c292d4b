"""``fedseg compare``: several federation plans on the same sites, seed and epoch budget,
next to the centralized model (all training cases pooled) and one model per site alone.

Every plan runs the real round loop (``Coordinator``) and the real site code (``run_task``)
in this process, one site after the other (``local_transport.LocalTransport``): the same
math and files as a simulation, without the engine's process start-up, so a comparison fits
on a laptop. The baselines use the centralized runner
(``commands.central_training.run_training``).

The package, by concern:

    arguments.py        what the user asks for: plan arguments, ``--poison``, CompareConfig
    budget.py           the epoch budget: each plan's rounds, the epochs axis of its curve
    attacks.py          a poisoned site: scaled updates, scrambled labels, lying reports
    local_transport.py  the in-process transport (sites one after the other)
    evaluation.py       every final and best model on every site's validation cases
    outputs.py          the results: csv, markdown, the console table, the plot
    run.py              ``run_compare``: runs it all into an output folder

Budget: ``budget`` local epochs per site. A parallel plan runs
``ceil(budget * sites / (local_epochs * sites_per_round))`` rounds; ``cyclic`` runs
``budget / epochs_per_visit`` cycles; ``single-pass`` trains ``budget`` epochs per visit;
the centralized model trains ``budget`` epochs over the pooled cases (the same case-epochs);
a single-site model trains ``budget`` epochs on its site. The recipe's lr schedule
(``train.lr_schedule``) runs over each plan's rounds and over the baselines' epochs.
``single_sites`` false (``--no-single-sites``) leaves the single-site models out.

``--poison`` makes one site lie or poison its data (``attacks``); the plans keep their
report and norm bounds (plan ``bounds``) unless ``--no-bounds`` switches them off to
measure what they prevent.

Every final and best model is then validated on every site's validation cases (the clean
ones, even when a site was poisoned) and on the held-out sites' cases (sites that never
trained). A run's curve is its validation score per model round by the one round-score
rule (``tracking.curves.round_scores``). Output folder::

    compare.yaml       the settings (``--resume DIR`` reads them and continues every run
                       after its last finished round)
    runs/<label>/      each run's folder
    results.csv        one row per run       results.md        the same as a markdown table
    per_site.csv       Dice per run, model, site and region
    curves.png         mean validation Dice against local epochs per site, every run
"""
