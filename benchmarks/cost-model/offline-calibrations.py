#!/usr/bin/env python3
"""Offline check of the cost model's calibrations on finished runs (issue 12).

For every solution with a measured check in RUN/solutions/*.json, the architecture it stands on is re-estimated from
the run's own costs.json (engine/min timings) under four calibrations of the parent's whole against its parts:
  anchored  the whole less the parts as a fixed per-request cost (may be negative);
  scaled    the blocks scaled so the parts add up to the whole;
  hybrid    anchored where the whole exceeds the parts, scaled where the parts exceed it (the default since 3 Dec);
  half      half of each;
and compared with the ratio the check measured in the engine. Usage: offline-calibrations.py RUN [RUN ...]
"""
import json,glob,os,statistics as st,sys
def load(run):
    c=json.load(open(f'{run}/costs.json'))
    if c['device']['method']!='engine/min/anchored': return None
    e={x['variant']:(x['prefill']['measured']['median_ms'],x['decode']['measured']['median_ms']) for x in c['entries']}
    nb=c['non_block']; w=c['whole_parent']; steps=c['scenario']['decode_steps']
    return c,e,nb,w,steps
rows=[]
for run in sys.argv[1:]:
    L=load(run)
    if not L: continue
    c,e,nb,w,steps=L
    NBp,NBd=nb['prefill']['measured']['median_ms'],nb['decode']['measured']['median_ms']
    Wp,Wd=w['prefill']['median_ms'],w['decode']['median_ms']
    Pp,Pd=w['sum_of_parts_prefill_ms'],w['sum_of_parts_decode_ms']
    def T(bp,bd,mode):
        def ph(NB,W,P,b):
            off=W-P
            if mode=='anchored': return NB+off+b
            if mode=='scaled': return NB+(W-NB)/(P-NB)*b
            if mode=='hybrid': return NB+off+b if off>=0 else NB+(W-NB)/(P-NB)*b
            if mode=='half': s=(W-NB)/(P-NB); return NB+off/2+b*(1+s)/2
        return ph(NBp,Wp,Pp,bp)+steps*ph(NBd,Wd,Pd,bd)
    parent=Wp+steps*Wd
    for f in sorted(glob.glob(f'{run}/solutions/*.json')):
        s=json.load(open(f))
        mc=s.get('measured_check')
        if not mc or 'layers' not in s: continue
        att=mc['attempts']; k=mc.get('kept'); a=att[k if k is not None else -1]
        ids=[x for l in s['layers'] for x in (l['attention'],l['ffn']) if x in e]
        bp=sum(e[i][0] for i in ids); bd=sum(e[i][1] for i in ids)
        r={m:parent/T(bp,bd,m) for m in ['anchored','scaled','hybrid','half']}
        rows.append((run,os.path.basename(f)[:-5],a['estimated_ratio'],a['measured_ratio'],r,(Wp-Pp)/Wp,(Wd-Pd)/Wd))
for run,name,est,meas,r,op,od in rows:
    print(f"{run:6s} {name:34s} off p{op:+.2f} d{od:+.2f} stored {est:.2f} meas {meas:.2f} | "+" ".join(f"{m} {v:.2f}({(v/meas-1)*100:+.0f}%)" for m,v in r.items()))
for m in ['anchored','scaled','hybrid','half']:
    errs=[abs(r[m]/meas-1) for _,_,_,meas,r,_,_ in rows]
    print(m, 'mean|err| %.1f%%  max %.1f%%  within5 %d/%d'%(100*st.mean(errs),100*max(errs),sum(x<=0.05 for x in errs),len(errs)))
