#!/usr/bin/env python3
"""Layering check (ARCHITECTURE.md): no module imports a higher layer, and no two files import
each other, directly or through a cycle. Reads src/ and controllers/ as text; exit 1 on a finding.
Run from the repository root: python3 scripts/check-layers.py"""
import re,os,collections,sys
crates={'berth_core':'src/core','crate@src/core':'src/core','berth_controllers':'controllers','crate@controllers':'controllers','berth':'src','crate@src':'src'}
# map module path -> file
files={}
def modpath(root,p):
    r=os.path.relpath(p,root)[:-3].split('/')
    if r[-1] in('mod','lib','main'): r=r[:-1]
    return tuple(r)
roots={'src/core':'berth_core','controllers':'berth_controllers','src':'berth'}
for root,cr in roots.items():
    for dp,dirs,fs in os.walk(root):
        if root=='src' and dp.startswith('src/core'): continue
        for f in fs:
            if f.endswith('.rs'):
                p=os.path.join(dp,f); files[(cr,modpath(root,p))]=p
def resolve(cr,path):
    # longest prefix that is a file
    for i in range(len(path),-1,-1):
        k=(cr,tuple(path[:i]))
        if k in files: return files[k]
    return None
edges=collections.defaultdict(set)
for (cr,mp),p in files.items():
    s=open(p).read()
    s=re.sub(r'//[^\n]*','',s)
    # strip cfg(test) mod blocks crudely
    i=s.find('#[cfg(test)]')
    if i>=0: s=s[:i]
    # expand use trees roughly: collect path tokens
    for m in re.finditer(r'\b(crate|super|self|berth_core|berth_controllers)((?:::\w+)+)(::\{([^;]*?)\})?',s):
        head=m.group(1); rest=[x for x in m.group(2).split('::') if x]
        if head=='crate': base=(cr,())
        elif head in('berth_core','berth_controllers'): base=(head,())
        elif head=='self': base=(cr,mp if p.endswith(('mod.rs','lib.rs')) else mp)
        else:
            par=mp if p.endswith(('mod.rs','lib.rs')) else mp[:-1]
            base=(cr,par[:-1] if p.endswith(('mod.rs','lib.rs')) else mp[:-1])
            # super from file a/b.rs (mp=(a,b)) -> (a,)
            base=(cr,(mp[:-1]))
            while rest and rest[0]=='super': rest=rest[1:]; base=(cr,base[1][:-1])
        if head=='self': base=(cr,mp)
        paths=[rest]
        if m.group(4):
            for item in re.split(r',',m.group(4)):
                t=re.findall(r'\w+',item)
                if t: paths.append(rest+[t[0]])
        for r in paths:
            tgt=resolve(base[0],list(base[1])+r)
            if tgt and tgt!=p: edges[p].add(tgt)
    if p.endswith(('mod.rs','lib.rs','main.rs')):
        for ch in set(re.findall(r'(?<![:\w])(\w+)::',s)):
            k=(cr,mp+(ch,))
            if k in files and files[k]!=p: edges[p].add(files[k])
# find SCCs
idx={};low={};st=[];on=set();out=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: out.append(comp)
for v in list(files.values()):
    if v not in idx: sc(v)
for comp in out: print("file cycle:", " -> ".join(sorted(comp)))
FILE_CYCLES = len(out)

# ---- module layers ----
layer={'util':0,'store':1,'model':2,'objects':2,'runtime':3,'manifest':3,'placement':3,'metrics':3,'auth':4,'audit':4,'apply':4,'compose':4,'agent':5,'gitops':5,'lb':5,'controllers':5,'api':6,'node':7,'bench':8,'cli':9}
ledges=collections.defaultdict(set)
def mod_of(p):
    if p.startswith('controllers/'): return 'controllers'
    if p.startswith('src/core/'):
        r=p[len('src/core/'):]
        return r.split('/')[0].replace('.rs','')
    r=p[len('src/'):]
    return r.split('/')[0].replace('.rs','')
for root in ['src','controllers']:
  for dp,_,fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f); m=mod_of(p)
        if m in ('lib','main'): continue
        s=open(p).read()
        s=re.sub(r'//.*','',s)
        refs=set()
        for pre in ['crate','berth_core']:
            refs|=set(re.findall(pre+r'::(\w+)',s))
            for grp in re.findall(pre+r'::\{([^}]*)\}',s):
                refs|=set(re.findall(r'(?:^|,)\s*(\w+)',grp))
        if 'berth_controllers' in s: refs.add('controllers')
        if m=='controllers':
            refs={r for r in refs if r in layer and r not in ('scheduler',)}
        for r in refs:
            if r in layer and r!=m: ledges[m].add(r)
bad=0
for m in sorted(ledges):
    for r in sorted(ledges[m]):
        if layer[r]>layer[m]: print('upward import:',m,'->',r); bad+=1
# cycles
cycles=[]
def cyc():
    color={}
    def dfs(u,path):
        color[u]=1
        for v in ledges[u]:
            if color.get(v)==1: print('module cycle:',path+[v]); cycles.append(1)
            elif not color.get(v): dfs(v,path+[v])
        color[u]=2
    for u in list(ledges): 
        if not color.get(u): dfs(u,[u])
cyc()

if FILE_CYCLES or bad or cycles:
    sys.exit(1)
print("layers: no upward imports, no module or file cycles")
