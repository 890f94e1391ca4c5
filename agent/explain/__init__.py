"""`svcdoctor explain NAMESPACE/SERVICE[:PORT]`: the Debug Services guide walked for one Service.

plan.py chooses what to probe (pure), agent/collect/probes.py and service_pods.py fetch, walk.py judges
(pure: cluster state + the node's snapshot and its derived views + probe results -> an Explanation),
agent/report/explain_text.py and explain_json.py render.
"""
