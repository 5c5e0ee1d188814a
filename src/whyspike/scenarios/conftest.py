# The seed article's scripts in seed/ are data (run by `whyspike demo` through the `whyspike run` machinery), not
# modules: importing one would train a model and needs `tensorflow`. Keep pytest's doctest collection out of them.
collect_ignore_glob = ["seed/*.py"]
