// The start page: keeps the two window links on the chosen user, and opens both
// windows side by side.

const input = document.getElementById('user');
const link1 = document.getElementById('link1');
const link2 = document.getElementById('link2');

const initial = new URLSearchParams(location.search).get('user');
if (initial && /^\d+$/.test(initial)) input.value = initial;

function userId() {
  return /^\d+$/.test(input.value) && Number(input.value) > 0 ? input.value : '1';
}

function update() {
  link1.href = `/window/1/?user=${userId()}`;
  link2.href = `/window/2/?user=${userId()}`;
}

input.addEventListener('input', update);
document.getElementById('pick').addEventListener('submit', (event) => event.preventDefault());
document.getElementById('open-both').addEventListener('click', () => {
  const width = Math.floor(screen.availWidth / 2);
  const height = Math.min(screen.availHeight, 640);
  window.open(link1.href, 'window1', `popup,width=${width},height=${height},left=0,top=0`);
  window.open(link2.href, 'window2', `popup,width=${width},height=${height},left=${width},top=0`);
});
update();
