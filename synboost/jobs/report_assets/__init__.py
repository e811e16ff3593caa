"""The parts of ``report.html`` (:mod:`synboost.jobs.report`): the page with its inline CSS and JavaScript
(:mod:`.page`), inline SVG charts (:mod:`.svg`) and the per-image example gallery (:mod:`.gallery`)."""
