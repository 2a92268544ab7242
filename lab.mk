# The container lab (root; Debian 12). Included from the Makefile.
# $(VENV) comes from the Makefile (VENV ?= .venv), so a clone anywhere uses its own venv.
LAB_PY ?= $(abspath $(VENV))/bin/python
LAB_ANSIBLE ?= $(dir $(LAB_PY))ansible-playbook
LAB_CLIENT_NS := hlab-client

.PHONY: lab lab-down

lab: deps venv
	$(LAB_PY) -m tests.lab up
	cd ansible && ip netns exec $(LAB_CLIENT_NS) $(abspath $(LAB_ANSIBLE)) -i inventories/lab site.yml
	$(LAB_PY) -m tests.lab ssh node1 pcs status
	@echo
	@echo "VIP: 192.168.56.100 (scheduler API http://192.168.56.100:8480, from namespace $(LAB_CLIENT_NS))"
	@echo "  health: ip netns exec $(LAB_CLIENT_NS) curl -s http://192.168.56.100:8480/health"
	@echo "  CLI:    ip netns exec $(LAB_CLIENT_NS) env HASCHED_URL=http://192.168.56.100:8480 \\"
	@echo "            HASCHED_TOKEN_FILE=/var/lib/hasched-lab/api.token $(dir $(LAB_PY))hasched jobs list"
	@echo "  nodes:  $(LAB_PY) -m tests.lab ssh node1|node2|node3; status/crash/poweron/partition/heal"
	@echo "  down:   make lab-down"

lab-down:
	$(LAB_PY) -m tests.lab down
