# tests/probe/data holds training scripts the probe tests run as users run them (whyspike run / the black-box
# engine); pytest must not import them as test modules (--doctest-modules would, and they need `tensorflow`)
collect_ignore_glob = ["data/*.py"]
