# `make demo` sets up and serves the demo shop on SQLite; `make test` runs the whole suite on PostgreSQL + Redis.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_ARGS ?= --users 300 --products 240 --days 60 --seed 7
SERVE_ADDR ?= 127.0.0.1:8000

# The suite talks to real services; override these to point elsewhere.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/recommendations
TEST_BROKER_URL ?= redis://127.0.0.1:6379/0
TEST_CACHE_URL ?= redis://127.0.0.1:6379/1
PYTEST_ARGS ?=

.PHONY: demo demo-setup serve test test-hosts lint format bench messages clean

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

demo: demo-setup serve

demo-setup: $(BIN)/.installed
	@echo "==> migrating the SQLite database"
	$(BIN)/python manage.py migrate --noinput
	@echo "==> generating demo data (skipped if the catalog already has products)"
	$(BIN)/python manage.py generate_demo_data $(DEMO_ARGS) --if-empty
	@echo "==> training the recommender (its lists are computed as soon as it serves)"
	$(BIN)/python manage.py train_recommender
	$(BIN)/python manage.py create_demo_logins --site http://$(SERVE_ADDR)

serve: $(BIN)/.installed
	@echo "==> serving the shop at http://$(SERVE_ADDR) (Ctrl-C to stop)"
	$(BIN)/python manage.py runserver $(SERVE_ADDR)

test: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	DATABASE_URL=sqlite://:memory: $(BIN)/python manage.py makemigrations --check --dry-run
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) CACHE_URL=$(TEST_CACHE_URL) \
		$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) test-hosts

# Every host project with a suite (tests/hosts/<host>/tests), against the app installed from the built wheel.
test-hosts: $(BIN)/.installed-dev
	@status=0; for host in $(sort $(patsubst tests/hosts/%/tests/,%,$(dir $(wildcard tests/hosts/*/tests/)))); do \
		DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) CACHE_URL=$(TEST_CACHE_URL) \
			tests/hosts/run $$host || status=1; \
	done; exit $$status

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(BIN)/.installed-dev
	$(BIN)/python bench/ingest.py

# Collect the translatable strings (the app's into recommendations/locale, the demo's into shop/locale), keep the
# translations made so far, and compile. Translate what `msgattrib --untranslated` lists, then run it again.
MESSAGES_IGNORE := -i "recommendations/*" -i ".venv*" -i "tests/*" -i "bench/*" -i "docs/*" -i "build/*" -i "dist/*"
messages: $(BIN)/.installed
	cd recommendations && DJANGO_SETTINGS_MODULE=shop.settings PYTHONPATH=.. ../$(BIN)/django-admin makemessages -l zh_Hans --no-obsolete
	$(BIN)/python manage.py makemessages -l zh_Hans --no-obsolete $(MESSAGES_IGNORE)
	for po in recommendations/locale/*/LC_MESSAGES/django.po shop/locale/*/LC_MESSAGES/django.po; do \
		msgfmt --check -o "$${po%.po}.mo" "$$po" || exit 1; done

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles .pytest_cache .ruff_cache
