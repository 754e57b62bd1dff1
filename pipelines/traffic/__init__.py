"""The traffic simulator: the simulated users (pipelines/simulate.py) visit a live server, look at the
slate it answers, click, add to cart and buy, and their events land as ordinary landing files that
name the answer's request id, so ingest and dbt join them to the server's impressions.

shoppers.py  how a user reacts to a slate (position bias, latent affinity, the funnel)
policies.py  where slates come from: the server (HTTP or in-process) or a list policy in the simulator
run.py       days of visits: requests, reactions, landing files, the summary
ips_check.py the off-policy check: IPS from exploration logs against the CTR measured online, with the
             policies in the simulator or through the server (its exploration, its impression log)
"""
