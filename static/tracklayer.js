/* tracklayer_mw snippet (CONTRACT.md §3-5), notes in snippet.py */
(function(w,d,T){
 if(T&&!T.q)return; // included twice
 var el=d.currentScript||d.querySelector('script[data-tl]'),C={},s={},q=[],cons,t=0;
 try{C=JSON.parse(el.dataset.tl)}catch(x){}
 var K=(C.c||'').split('cookie:')[1],
  N='PageVisit ViewCategory Search AddToCart AddToWishlist AddPaymentInfo Checkout Purchase Lead Signup WatchVideo ViewContent Subscribe Custom'.split(' '),
  P={Checkout:'initiatecheckout',Purchase:'checkout'},
  R={num_items:'order_quantity',search_string:'search_query',contents:'line_items'},
  safe=f=>(...a)=>{try{return f(...a)}catch(x){return null}},
  ok=()=>cons!=null?cons:K?d.cookie.split('; ').includes(K):C.c!='denied',
  ids=()=>safe(()=>JSON.parse(localStorage.tl_ids))()||[];

 var tag=()=>{
  if(C.t&&!t++&&!w.pintrk){
   var p=w.pintrk=(...a)=>p.queue.push(a);
   p.queue=[];p.version='3.0';
   d.head.appendChild(Object.assign(d.createElement('script'),{src:'https://s.pinimg.com/ct/core.js',nonce:el.nonce}));
   p('load',C.t);p('page');
  }
 };

 var send=()=>{ // one body, sent at once: a beacon outlives the page
  tag();
  var a=q.splice(0).map(e=>{
   var c=e.custom,id=e.event_id,o={event_id:id},k;
   for(k in c)o[R[k]||k]=k=='contents'?c[k].map(x=>({product_id:x.id,product_price:x.item_price,product_quantity:x.quantity})):c[k];
   if(e.pixel=e.pixel&&!!w.pintrk)pintrk('track',P[e.event]||e.event.toLowerCase(),o);
   if(/:/.test(id))try{localStorage.tl_ids=JSON.stringify(ids().concat(id).slice(-50))}catch(x){}
   return e;
  }),b=JSON.stringify({events:a});
  a[0]&&(navigator.sendBeacon(C.i,b)||fetch(C.i,{method:'POST',body:b,keepalive:true}));
 };

 var track=safe((ev,c,o)=>{
  c=c||{};o=o||{};
  if(!N.includes(ev))return console.warn('tracklayer: unknown event',ev),null;
  var id=o.event_id,r=c.order_id;
  if(id==null&&r!=null&&(r=encodeURIComponent((r+'').trim()).replace(/[!'()*]/g,c=>'%'+c.charCodeAt().toString(16).toUpperCase()))){ // Python's quote()
   if(r.length>100)return console.error('tracklayer: order_id too long'),null;
   id=ev+':'+r;
  }
  id=id!=null?''+id:crypto.randomUUID?crypto.randomUUID():([1e7]+-1e3+-4e3+-8e3+-1e11)
   .replace(/[018]/g,c=>(c^crypto.getRandomValues(new Uint8Array(1))[0]&15>>c/4).toString(16));
  if(s[id]||ids().includes(id))return null;
  s[id]=1;
  q[49]||q.push({event:ev,event_id:id,event_time:Date.now(),url:location.href,custom:c,user:o.user,pixel:o.pixel!==false});
  return ok()&&send(),id;
 });

 var consent=safe(y=>{
  cons=y=!!y;
  if(K)d.cookie=K+';path=/;SameSite=Lax;max-age='+y*31536000+
   (C.d?';domain='+C.d:'')+(location.protocol=='https:'?';Secure':'');
  w.pintrk&&pintrk('setconsent',y);
  y?send():q=[];
 });

 // linker
 var linked=h=>h!=location.hostname&&C.l.some(x=>x[0]=='.'?('.'+h).endsWith(x):h==x),
  go=u=>C.g+'?to='+encodeURIComponent(u),
  link=safe(e=>{
   var a=e.target.closest('a[href]');
   if(linked(a.hostname))a.href=go(a.href);
  });
 d.addEventListener('click',link,true);
 d.addEventListener('auxclick',link,true);
 d.addEventListener('submit',safe(e=>{
  var f=e.target,u=new URL(f.getAttribute('action'),d.baseURI);
  if(!linked(u.hostname))return;
  if(/post/i.test(f.getAttribute('method')))return f.setAttribute('action',go(u.href));
  u.search=''; // GET: the server adds the fields
  f.setAttribute('action',C.g);
  f.appendChild(Object.assign(d.createElement('input'),{type:'hidden',name:'to',value:u.href}));
 }),true);

 var api=w.tracklayer={track,consent};
 ok()&&tag();
 T&&T.q.forEach(c=>api[c[0]](...c[1]));
 if(C.pv!==0)api.eventId=track('PageVisit');
})(window,document,window.tracklayer);
